#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "tokenizer/tokenizer_state.h"
#include "tokenizer/utf8.h"

namespace spar {

using tokenizer_internal::AddedTokenMatcher;
using tokenizer_internal::ChatFormat;
using tokenizer_internal::Family;
using tokenizer_internal::TokenizerState;
using Json = nlohmann::json;

namespace tokenizer_internal {

int32_t AddedTokenMatcher::Child(int32_t node, uint8_t byte) const {
  const auto& children = nodes_[static_cast<size_t>(node)].children;
  auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, INT32_MIN));
  return it != children.end() && it->first == byte ? it->second : -1;
}

void AddedTokenMatcher::Add(std::string_view content, int32_t id) {
  if (content.empty()) return;
  first_byte_[static_cast<uint8_t>(content[0])] = true;
  int32_t node = 0;
  for (char c : content) {
    const uint8_t byte = static_cast<uint8_t>(c);
    int32_t next = Child(node, byte);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& children = nodes_[static_cast<size_t>(node)].children;
      children.insert(
          std::lower_bound(children.begin(), children.end(), std::make_pair(byte, INT32_MIN)),
          {byte, next});
    }
    node = next;
  }
  nodes_[static_cast<size_t>(node)].id = id;
}

bool AddedTokenMatcher::FindNext(std::string_view text, size_t from, size_t* pos, size_t* len,
                                 int32_t* id) const {
  for (size_t start = from; start < text.size(); ++start) {
    if (!first_byte_[static_cast<uint8_t>(text[start])]) continue;
    int32_t node = 0;
    int32_t best_id = -1;
    size_t best_len = 0;
    for (size_t i = start; i < text.size(); ++i) {
      node = Child(node, static_cast<uint8_t>(text[i]));
      if (node < 0) break;
      if (nodes_[static_cast<size_t>(node)].id >= 0) {
        best_id = nodes_[static_cast<size_t>(node)].id;
        best_len = i + 1 - start;
      }
    }
    if (best_id >= 0) {
      *pos = start;
      *len = best_len;
      *id = best_id;
      return true;
    }
  }
  return false;
}

}  // namespace tokenizer_internal

namespace {

constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 18;

// HF runs the Split regex with Oniguruma, whose \s is Unicode White_Space;
// PCRE2's UCP \s also takes U+180E. Spell the set out so both agree.
constexpr std::string_view kWhiteSpaceRanges =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

std::string TranslateWhitespaceClasses(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        if (in_class) {
          out.append(kWhiteSpaceRanges);
        } else {
          out.append("[").append(kWhiteSpaceRanges).append("]");
        }
      } else if (e == 'S' && !in_class) {
        out.append("[^").append(kWhiteSpaceRanges).append("]");
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out.push_back(c);
  }
  return out;
}

Status Bad(const std::string& file, const std::string& what) {
  return InvalidArgument(file + ": " + what);
}

Result<Json> ParseJson(std::string_view text, const std::string& file) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return Bad(file, std::string("not valid JSON: ") + e.what());
  }
}

// A token field of tokenizer_config.json: "<bos>" or {"content": "<bos>"}.
std::optional<std::string> ConfigToken(const Json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

// Pre-tokenizer and normaliser of tokenizer.json -> the state's flags.
Status ReadPipeline(const Json& root, const std::string& file, TokenizerState* s,
                    bool* byte_level) {
  *byte_level = false;
  std::string split_pattern;
  bool byte_level_regex = false;
  std::vector<const Json*> pre;
  if (root.contains("pre_tokenizer") && root["pre_tokenizer"].is_object()) {
    const Json& p = root["pre_tokenizer"];
    if (p.value("type", "") == "Sequence" && p.contains("pretokenizers") &&
        p["pretokenizers"].is_array()) {
      for (const Json& q : p["pretokenizers"]) pre.push_back(&q);
    } else {
      pre.push_back(&p);
    }
  }
  for (const Json* q : pre) {
    const std::string type = q->value("type", "");
    if (type == "ByteLevel") {
      *byte_level = true;
      s->add_prefix_space = q->value("add_prefix_space", false);
      byte_level_regex = q->value("use_regex", true);
    } else if (type == "Split") {
      if (!q->contains("pattern") || !(*q)["pattern"].is_object() ||
          !(*q)["pattern"].contains("Regex") || q->value("behavior", "") != "Isolated" ||
          q->value("invert", false)) {
        return Bad(file, "pre_tokenizer Split: only an Isolated, non-inverted Regex is supported");
      }
      split_pattern = (*q)["pattern"]["Regex"].get<std::string>();
    } else {
      return Bad(file, "unsupported pre_tokenizer type '" + type + "'");
    }
  }
  if (*byte_level) {
    if (split_pattern.empty() && byte_level_regex) {
      split_pattern =
          "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    }
    if (split_pattern.empty()) return Bad(file, "byte-level pre_tokenizer without a split regex");
    const std::string pattern = TranslateWhitespaceClasses(split_pattern);
    int error = 0;
    PCRE2_SIZE offset = 0;
    s->regex = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (s->regex == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return Bad(file, "pre_tokenizer regex does not compile at offset " + std::to_string(offset) +
                           ": " + reinterpret_cast<const char*>(message));
    }
    // JIT is an optimisation; the interpreter gives the same matches.
    pcre2_jit_compile(s->regex, PCRE2_JIT_COMPLETE);
  } else if (!pre.empty()) {
    return Bad(file, "pre_tokenizer is only supported with byte-level BPE");
  }

  std::vector<const Json*> norms;
  if (root.contains("normalizer") && root["normalizer"].is_object()) {
    const Json& n = root["normalizer"];
    if (n.value("type", "") == "Sequence" && n.contains("normalizers") &&
        n["normalizers"].is_array()) {
      for (const Json& q : n["normalizers"]) norms.push_back(&q);
    } else {
      norms.push_back(&n);
    }
  }
  for (const Json* n : norms) {
    const std::string type = n->value("type", "");
    if (type == "Replace" && n->contains("pattern") && (*n)["pattern"].is_object() &&
        (*n)["pattern"].value("String", "") == " " && n->value("content", "") == "\u2581") {
      s->replace_space = true;
    } else if (type == "Prepend" && n->value("prepend", "") == "\u2581" && !s->replace_space) {
      s->prepend = "\u2581";
    } else {
      return Bad(file, "unsupported normalizer '" + type + "'");
    }
  }
  if (root.contains("decoder") && root["decoder"].is_object()) {
    const Json& d = root["decoder"];
    if (d.value("type", "") == "Sequence" && d.contains("decoders") && d["decoders"].is_array()) {
      for (const Json& q : d["decoders"]) {
        if (q.value("type", "") == "Strip") {
          s->strip_start = q.value("start", 0);
          s->strip_stop = q.value("stop", 0);
        }
      }
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<TokenizerState>> BuildState(std::string_view tokenizer_json,
                                                   std::string_view config_json,
                                                   const std::string& tok_file,
                                                   const std::string& config_file) {
  SPAR_ASSIGN_OR_RETURN(Json root, ParseJson(tokenizer_json, tok_file));
  if (!root.is_object()) return Bad(tok_file, "top level is not an object");
  if (!root.contains("model") || !root["model"].is_object())
    return Bad(tok_file, "missing \"model\" section");
  const Json& model = root["model"];
  const std::string type = model.value("type", "");
  if (type != "BPE") return Bad(tok_file, "model.type is '" + type + "', only BPE is supported");
  if (!model.contains("vocab") || !model["vocab"].is_object())
    return Bad(tok_file, "model.vocab is missing or not an object");
  if (!model.contains("merges") || !model["merges"].is_array())
    return Bad(tok_file, "model.merges is missing or not an array");

  auto s = std::make_unique<TokenizerState>();
  bool byte_level = false;
  SPAR_RETURN_IF_ERROR(ReadPipeline(root, tok_file, s.get(), &byte_level));
  const bool byte_fallback = model.value("byte_fallback", false);
  if (byte_level) {
    s->family = Family::kLlama3;
  } else if (byte_fallback && s->replace_space) {
    s->family = Family::kGemma;
  } else {
    return Bad(tok_file,
               "neither byte-level BPE (Llama-3) nor byte-fallback BPE with a "
               "\" \" -> \"\u2581\" normalizer (Gemma)");
  }

  // Vocabulary; ids may be sparse.
  int32_t max_id = -1;
  std::unordered_map<std::string, int32_t> bpe_vocab;
  bpe_vocab.reserve(model["vocab"].size());
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX)
      return Bad(tok_file, "model.vocab['" + it.key() + "'] is not a valid id");
    max_id = std::max(max_id, it.value().get<int32_t>());
  }
  std::vector<std::pair<std::string, int32_t>> added;
  std::vector<bool> added_special;
  if (root.contains("added_tokens")) {
    if (!root["added_tokens"].is_array()) return Bad(tok_file, "added_tokens is not an array");
    for (const Json& a : root["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string() || a["id"].get<int64_t>() < 0 ||
          a["id"].get<int64_t>() > INT32_MAX)
        return Bad(tok_file, "added_tokens entry without an integer id and string content");
      added.emplace_back(a["content"].get<std::string>(), a["id"].get<int32_t>());
      added_special.push_back(a.value("special", false));
      max_id = std::max(max_id, added.back().second);
    }
  }
  const size_t n = static_cast<size_t>(max_id + 1);
  s->token_text.assign(n, std::string());
  s->special.assign(n, 0);
  s->text_to_id.reserve(n);
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    const int32_t id = it.value().get<int32_t>();
    s->token_text[static_cast<size_t>(id)] = it.key();
    s->text_to_id[it.key()] = id;
    if (byte_level) {
      std::string bytes;
      if (!tokenizer_internal::ByteLevelToBytes(it.key(), &bytes))
        return Bad(tok_file, "byte-level vocab token '" + it.key() + "' has unmapped characters");
      bpe_vocab[bytes] = id;
    } else {
      bpe_vocab[it.key()] = id;
    }
  }
  for (size_t i = 0; i < added.size(); ++i) {
    const auto& [content, id] = added[i];
    s->token_text[static_cast<size_t>(id)] = content;
    s->text_to_id[content] = id;
    s->special[static_cast<size_t>(id)] = added_special[i] ? 1 : 0;
    s->added.Add(content, id);
  }

  // What each id decodes to.
  s->token_bytes.assign(n, std::string());
  s->byte_value.assign(n, -1);
  for (size_t id = 0; id < n; ++id) {
    const std::string& text = s->token_text[id];
    if (byte_level) {
      std::string bytes;
      s->token_bytes[id] = tokenizer_internal::ByteLevelToBytes(text, &bytes) ? bytes : text;
      continue;
    }
    std::string out;
    for (size_t p = 0; p < text.size();) {
      if (text.compare(p, 3, "\u2581") == 0) {
        out.push_back(' ');
        p += 3;
      } else {
        out.push_back(text[p++]);
      }
    }
    if (out.size() == 6 && out.compare(0, 3, "<0x") == 0 && out[5] == '>' &&
        std::isxdigit(static_cast<unsigned char>(out[3])) &&
        std::isxdigit(static_cast<unsigned char>(out[4]))) {
      s->byte_value[id] = static_cast<int16_t>(std::stoi(out.substr(3, 2), nullptr, 16));
    }
    s->token_bytes[id] = std::move(out);
  }

  // Merges: "a b" strings or ["a", "b"] pairs.
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(model["merges"].size());
  for (const Json& m : model["merges"]) {
    std::string left, right;
    if (m.is_string()) {
      const std::string& line = m.get_ref<const std::string&>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        return Bad(tok_file, "merge '" + line + "' is not two space-separated tokens");
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return Bad(tok_file, "model.merges entry is neither \"a b\" nor [\"a\", \"b\"]");
    }
    if (byte_level) {
      std::string lb, rb;
      if (!tokenizer_internal::ByteLevelToBytes(left, &lb) ||
          !tokenizer_internal::ByteLevelToBytes(right, &rb))
        return Bad(tok_file, "merge '" + left + " " + right + "' has unmapped characters");
      left = std::move(lb);
      right = std::move(rb);
    }
    merges.emplace_back(std::move(left), std::move(right));
  }
  tokenizer_internal::BpeOptions options;
  options.byte_level = byte_level;
  options.byte_fallback = byte_fallback;
  options.ignore_merges = model.value("ignore_merges", false);
  options.fuse_unk = model.value("fuse_unk", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = bpe_vocab.find(model["unk_token"].get<std::string>());
    if (it != bpe_vocab.end()) options.unk_id = it->second;
  }
  Status built = s->bpe.Build(options, std::move(bpe_vocab), merges);
  if (!built.ok()) return Bad(tok_file, built.message());

  // Config: BOS / EOS and the chat format.
  std::string bos = s->family == Family::kLlama3 ? "<|begin_of_text|>" : "<bos>";
  std::string eos = s->family == Family::kLlama3 ? "<|end_of_text|>" : "<eos>";
  s->chat_format = s->family == Family::kLlama3 ? ChatFormat::kLlama3 : ChatFormat::kGemma;
  if (!config_json.empty()) {
    SPAR_ASSIGN_OR_RETURN(Json config, ParseJson(config_json, config_file));
    if (!config.is_object()) return Bad(config_file, "top level is not an object");
    if (auto t = ConfigToken(config, "bos_token"))
      bos = *t;
    else if (config.contains("bos_token"))
      bos.clear();  // null: no BOS
    if (auto t = ConfigToken(config, "eos_token")) eos = *t;
    std::string tmpl;
    if (config.contains("chat_template")) {
      const Json& c = config["chat_template"];
      if (c.is_string()) {
        tmpl = c.get<std::string>();
      } else if (c.is_array()) {
        for (const Json& e : c)
          if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
              e["template"].is_string())
            tmpl = e["template"].get<std::string>();
      }
      if (tmpl.find("<|start_header_id|>") != std::string::npos) {
        s->chat_format = ChatFormat::kLlama3;
      } else if (tmpl.find("<start_of_turn>") != std::string::npos) {
        s->chat_format = ChatFormat::kGemma;
      } else {
        s->chat_format = ChatFormat::kNone;
      }
    }
  }
  auto resolve = [&](const std::string& name, const char* field, int32_t* out) -> Status {
    if (name.empty()) return Status::Ok();
    auto it = s->text_to_id.find(name);
    if (it == s->text_to_id.end()) {
      // The family's usual names are only a guess when there is no config.
      if (config_json.empty()) return Status::Ok();
      return Bad(config_file, std::string(field) + " '" + name + "' is not a token");
    }
    *out = it->second;
    return Status::Ok();
  };
  SPAR_RETURN_IF_ERROR(resolve(bos, "bos_token", &s->bos_id));
  SPAR_RETURN_IF_ERROR(resolve(eos, "eos_token", &s->eos_id));
  s->bos_text = s->bos_id >= 0 ? bos : std::string();
  return s;
}

// Reused per thread: PCRE2 match data and a JIT stack large enough for long
// whitespace runs.
struct RegexScratch {
  pcre2_match_data* match = pcre2_match_data_create(4, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  RegexScratch() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~RegexScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(match);
  }
};

void EncodeWordCached(const TokenizerState& s, std::string_view word, std::vector<int32_t>* out) {
  if (word.empty()) return;
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  std::string key;
  if (cacheable) {
    key.assign(word);
    std::lock_guard<std::mutex> lock(s.cache_mu);
    auto it = s.cache.find(key);
    if (it != s.cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out->size();
  s.bpe.Tokenize(word, out);
  if (cacheable) {
    std::vector<int32_t> ids(out->begin() + static_cast<std::ptrdiff_t>(before), out->end());
    std::lock_guard<std::mutex> lock(s.cache_mu);
    if (s.cache.size() >= kMaxCacheEntries) s.cache.clear();
    s.cache.emplace(std::move(key), std::move(ids));
  }
}

// One stretch of text between added tokens.
// Each stretch is normalised and pre-tokenized on its own, as HF does.
void EncodeSegment(const TokenizerState& s, std::string_view text, std::vector<int32_t>* out) {
  if (text.empty()) return;
  if (s.family == Family::kGemma) {
    std::string normalized = s.prepend;
    normalized.reserve(text.size() + 8);
    for (char c : text) {
      if (c == ' ') {
        normalized.append("\u2581");
      } else {
        normalized.push_back(c);
      }
    }
    EncodeWordCached(s, normalized, out);
    return;
  }
  std::string with_prefix;
  if (s.add_prefix_space && text[0] != ' ') {
    with_prefix = " " + std::string(text);
    text = with_prefix;
  }
  thread_local RegexScratch scratch;
  size_t last = 0;
  size_t start = 0;
  while (start < text.size()) {
    int rc = pcre2_match(s.regex, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                         PCRE2_NO_UTF_CHECK, scratch.match, scratch.context);
    if (rc < 0) break;  // no more matches (or a resource error: rest is one gap)
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.match);
    const size_t mb = ov[0];
    const size_t me = ov[1];
    if (mb > last) EncodeWordCached(s, text.substr(last, mb - last), out);
    EncodeWordCached(s, text.substr(mb, me - mb), out);
    last = me;
    if (me == mb) {
      // Empty match: step over one character.
      start = me + 1;
      while (start < text.size() && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) ++start;
    } else {
      start = me;
    }
  }
  if (last < text.size()) EncodeWordCached(s, text.substr(last), out);
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<TokenizerState> state) : state_(std::move(state)) {}
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::FromDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("tokenizer folder '" + dir + "' does not exist");
  const std::string tok_file = (fs::path(dir) / "tokenizer.json").string();
  const std::string config_file = (fs::path(dir) / "tokenizer_config.json").string();
  if (!fs::exists(tok_file, ec)) return NotFound(tok_file + ": no such file");
  SPAR_ASSIGN_OR_RETURN(std::string tok_text, ReadFileToString(tok_file));
  std::string config_text;
  if (fs::exists(config_file, ec)) {
    SPAR_ASSIGN_OR_RETURN(config_text, ReadFileToString(config_file));
    if (config_text.empty()) return InvalidArgument(config_file + ": empty file");
  }
  SPAR_ASSIGN_OR_RETURN(auto state, BuildState(tok_text, config_text, tok_file, config_file));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(state)));
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                       std::string_view config_json,
                                                       const std::string& origin) {
  SPAR_ASSIGN_OR_RETURN(auto state,
                        BuildState(tokenizer_json, config_json, origin + "/tokenizer.json",
                                   origin + "/tokenizer_config.json"));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(state)));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
  const TokenizerState& s = *state_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && s.bos_id >= 0) out.push_back(s.bos_id);
  std::string repaired;
  if (!tokenizer_internal::IsValidUtf8(text)) {
    repaired = tokenizer_internal::Utf8Lossy(text);
    text = repaired;
  }
  size_t from = 0;       // where the next search starts
  size_t text_from = 0;  // start of the pending plain-text stretch
  size_t pos = 0, len = 0;
  int32_t id = -1;
  while (s.added.FindNext(text, from, &pos, &len, &id)) {
    from = pos + len;
    if (!parse_special && s.special[static_cast<size_t>(id)]) continue;  // stays text
    EncodeSegment(s, text.substr(text_from, pos - text_from), &out);
    out.push_back(id);
    text_from = from;
  }
  EncodeSegment(s, text.substr(text_from), &out);
  return out;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const TokenizerState& s = *state_;
  std::string raw;
  std::string out;
  auto valid = [&](int32_t id) {
    return id >= 0 && static_cast<size_t>(id) < s.token_text.size() &&
           (!s.token_text[static_cast<size_t>(id)].empty()) &&
           !(skip_special && s.special[static_cast<size_t>(id)]);
  };
  if (s.family == Family::kLlama3) {
    for (int32_t id : ids)
      if (valid(id)) raw.append(s.token_bytes[static_cast<size_t>(id)]);
    return tokenizer_internal::Utf8Lossy(raw);
  }
  // ByteFallback: a run of <0xXX> tokens is either valid UTF-8 as a whole or
  // becomes one U+FFFD per byte.
  std::string run;
  auto flush_run = [&]() {
    if (run.empty()) return;
    if (tokenizer_internal::IsValidUtf8(run)) {
      out.append(run);
    } else {
      for (size_t i = 0; i < run.size(); ++i) out.append(tokenizer_internal::kReplacementChar);
    }
    run.clear();
  };
  for (int32_t id : ids) {
    if (!valid(id)) continue;
    const int16_t b = s.byte_value[static_cast<size_t>(id)];
    if (b >= 0) {
      run.push_back(static_cast<char>(b));
      continue;
    }
    flush_run();
    out.append(s.token_bytes[static_cast<size_t>(id)]);
  }
  flush_run();
  if (s.strip_start > 0 || s.strip_stop > 0) {
    size_t a = 0;
    while (a < out.size() && a < static_cast<size_t>(s.strip_start) && out[a] == ' ') ++a;
    size_t b = out.size();
    while (b > a && out.size() - b < static_cast<size_t>(s.strip_stop) && out[b - 1] == ' ') --b;
    out = out.substr(a, b - a);
  }
  return out;
}

std::string Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= state_->token_text.size()) return std::string();
  return state_->token_text[static_cast<size_t>(id)];
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token) const {
  auto it = state_->text_to_id.find(std::string(token));
  if (it == state_->text_to_id.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < state_->special.size() &&
         state_->special[static_cast<size_t>(id)] != 0;
}

int32_t Tokenizer::bos_id() const { return state_->bos_id; }
int32_t Tokenizer::eos_id() const { return state_->eos_id; }

std::vector<int32_t> Tokenizer::stop_ids() const {
  std::vector<int32_t> ids;
  if (state_->eos_id >= 0) ids.push_back(state_->eos_id);
  for (const char* name :
       {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>", "<eos>", "<end_of_turn>"}) {
    if (auto id = TokenId(name)) ids.push_back(*id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(state_->token_text.size()); }

std::string Tokenizer::family() const {
  return state_->family == Family::kLlama3 ? "llama3" : "gemma";
}

}  // namespace spar
