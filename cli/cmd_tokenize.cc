// `spar tokenize --tokenizer DIR [--text T | --input FILE] [--chat] [--add-bos]
//  [--decode "1,2,3"] [--verbose]`: ids of a text or a chat, or the text of ids.
// Without --text/--input it is a filter: JSON lines {"text": ...} (or
// {"messages": [...]}) on stdin -> {"ids": [...]} on stdout; with a bare
// --decode, {"ids": [...]} -> {"text": ...}.
#include <cstdio>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/files.h"
#include "tokenizer/tokenizer.h"

namespace spar::cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::string text;
  std::string input;
  std::string decode;
  bool chat = false;
  bool generation_prompt = false;
  bool add_bos = false;
  bool no_parse_special = false;
  bool verbose = false;
  bool decode_stream = false;
};

Result<std::vector<ChatMessage>> ParseChat(const std::string& text, const std::string& origin);

// The JSON-lines filter. Bad lines are errors naming the line number.
int RunStream(const Tokenizer& tok, const TokenizeArgs& args) {
  std::string line;
  int64_t n = 0;
  while (std::getline(std::cin, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto bad = [&](const std::string& what) {
      return Fail("tokenize", InvalidArgument("stdin:" + std::to_string(n) + ": " + what));
    };
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    nlohmann::json out;
    if (args.decode_stream) {
      if (!j.contains("ids") || !j["ids"].is_array()) return bad("needs \"ids\": [...]");
      std::vector<int32_t> ids;
      for (const auto& v : j["ids"]) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
          return bad("ids must be non-negative integers");
        ids.push_back(v.get<int32_t>());
      }
      out["text"] = tok.Decode(ids);
    } else if (j.contains("text") && j["text"].is_string()) {
      out["ids"] = tok.Encode(j["text"].get<std::string>(), args.add_bos, !args.no_parse_special);
    } else if (j.contains("messages")) {
      auto messages = ParseChat(j["messages"].dump(), "stdin:" + std::to_string(n));
      if (!messages.ok()) return Fail("tokenize", messages.status());
      auto ids = tok.EncodeChat(*messages, args.generation_prompt);
      if (!ids.ok()) return bad(ids.status().message());
      out["ids"] = *ids;
    } else {
      return bad("needs \"text\" (a string) or \"messages\" (a list)");
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}

std::string Quoted(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Result<std::vector<int32_t>> ParseIds(const std::string& list) {
  std::vector<int32_t> ids;
  std::string item;
  std::stringstream in(list);
  while (std::getline(in, item, ',')) {
    const size_t b = item.find_first_not_of(" \t\n[]");
    const size_t e = item.find_last_not_of(" \t\n[]");
    if (b == std::string::npos) continue;
    item = item.substr(b, e - b + 1);
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::out_of_range(item);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      return InvalidArgument("--decode: '" + item + "' is not a token id");
    }
  }
  return ids;
}

Result<std::vector<ChatMessage>> ParseChat(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(origin + ": not valid JSON: " + e.what());
  }
  if (!j.is_array()) return InvalidArgument(origin + ": expected a JSON array of {role, content}");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      return InvalidArgument(origin + ": message " + std::to_string(i) +
                             " needs string \"role\" and \"content\"");
    }
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return messages;
}

void PrintTokens(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    std::printf("%d\t%s\t%s%s\n", id, Quoted(tok.TokenText(id)).c_str(),
                Quoted(tok.Decode({id})).c_str(), tok.IsSpecial(id) ? "\tspecial" : "");
  }
}

int RunTokenize(const TokenizeArgs& args) {
  auto tok = Tokenizer::FromDir(args.tokenizer);
  if (!tok.ok()) return Fail("tokenize", tok.status());
  if (args.decode_stream || (args.decode.empty() && args.text.empty() && args.input.empty()))
    return RunStream(**tok, args);
  if (!args.decode.empty()) {
    auto ids = ParseIds(args.decode);
    if (!ids.ok()) return Fail("tokenize", ids.status());
    if (args.verbose) PrintTokens(**tok, *ids);
    std::cout << (*tok)->Decode(*ids) << "\n";
    return 0;
  }
  std::string text = args.text;
  std::string origin = "--text";
  if (!args.input.empty()) {
    auto read = ReadFileToString(args.input);
    if (!read.ok()) return Fail("tokenize", read.status());
    text = std::move(read).value();
    origin = args.input;
  }
  std::vector<int32_t> ids;
  if (args.chat) {
    auto messages = ParseChat(text, origin);
    if (!messages.ok()) return Fail("tokenize", messages.status());
    auto encoded = (*tok)->EncodeChat(*messages, args.generation_prompt);
    if (!encoded.ok()) return Fail("tokenize", encoded.status());
    ids = std::move(encoded).value();
  } else {
    ids = (*tok)->Encode(text, args.add_bos, !args.no_parse_special);
  }
  if (args.verbose) PrintTokens(**tok, ids);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) line += ",";
    line += std::to_string(ids[i]);
  }
  std::cout << line << "\n";
  if (args.verbose) std::cerr << ids.size() << " tokens (" << (*tok)->family() << ")\n";
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<TokenizeArgs>();
  auto* dir = sub.add_option("--tokenizer,--model", args->tokenizer,
                             "folder with tokenizer.json (+ tokenizer_config.json)");
  dir->required();
  auto* text = sub.add_option("--text", args->text, "text to encode");
  auto* input = sub.add_option("--input", args->input, "file whose contents to encode");
  text->excludes(input);
  auto* decode = sub.add_option_function<std::string>(
      "--decode",
      [args](const std::string& v) {
        args->decode = v;
        args->decode_stream = v.empty();
      },
      "comma-separated ids to decode; bare: stdin JSON lines {\"ids\"} -> {\"text\"}");
  decode->expected(0, 1);
  decode->excludes(text)->excludes(input);
  sub.add_flag("--chat", args->chat,
               "the input is a JSON array of {role, content}: render the chat template");
  sub.add_flag("--generation-prompt", args->generation_prompt,
               "with --chat: end with the assistant header");
  sub.add_flag("--add-bos,--add-special", args->add_bos, "prepend BOS (plain text only)");
  sub.add_flag("--no-parse-special", args->no_parse_special,
               "encode special-token strings as plain text");
  sub.add_flag("--verbose,-v", args->verbose, "also print each token (id, vocab string, text)");
  sub.callback([args]() { Exit(RunTokenize(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("tokenize",
                      "Encode text or a chat to token ids, or decode ids (Llama-3, Gemma)", 75,
                      Setup);

}  // namespace spar::cli
