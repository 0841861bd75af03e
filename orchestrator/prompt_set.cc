#include "orchestrator/prompt_set.h"

#include <cstdio>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/files.h"

namespace spar {
namespace {

// FNV-1a, enough to give content-derived ids a stable short name.
uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

Result<PromptSet> PromptSet::Load(const std::string& path, int64_t limit) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status().WithContext("prompt set");
  return Parse(*text, path, limit);
}

Result<PromptSet> PromptSet::Parse(const std::string& jsonl, const std::string& name,
                                   int64_t limit) {
  PromptSet set;
  std::set<std::string> ids;
  std::istringstream in(jsonl);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto where = [&](const std::string& what) {
      return InvalidArgument(name + ":" + std::to_string(line_no) + ": " + what);
    };
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      return where(std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) return where("each line must be a JSON object");
    PromptRecord p;
    const bool has_prompt = j.contains("prompt");
    const bool has_messages = j.contains("messages");
    if (has_prompt == has_messages)
      return where("needs exactly one of \"prompt\" (text) or \"messages\" (a list)");
    if (has_prompt) {
      if (!j["prompt"].is_string()) return where("\"prompt\" must be a string");
      p.text = j["prompt"].get<std::string>();
      if (p.text.empty()) return where("\"prompt\" is empty");
    } else {
      const auto& m = j["messages"];
      if (!m.is_array() || m.empty()) return where("\"messages\" must be a non-empty list");
      for (size_t i = 0; i < m.size(); ++i) {
        const auto& msg = m[i];
        std::string at = "messages[" + std::to_string(i) + "]";
        if (!msg.is_object() || !msg.contains("role") || !msg.contains("content") ||
            !msg["role"].is_string() || !msg["content"].is_string())
          return where(at + " must be an object with string \"role\" and \"content\"");
        std::string role = msg["role"].get<std::string>();
        if (role != "system" && role != "user" && role != "assistant")
          return where(at + ".role '" + role + "' is not one of system, user, assistant");
        p.messages.push_back({role, msg["content"].get<std::string>()});
      }
      if (p.messages.back().role != "user")
        return where("the last message must be from the user (the policy answers it)");
    }
    for (const char* key : {"prompt_id", "id"}) {
      if (j.contains(key)) {
        if (j[key].is_string()) p.prompt_id = j[key].get<std::string>();
        else if (j[key].is_number_integer()) p.prompt_id = std::to_string(j[key].get<int64_t>());
        else return where(std::string("\"") + key + "\" must be a string or an integer");
        break;
      }
    }
    if (p.prompt_id.empty()) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "p%016llx",
                    static_cast<unsigned long long>(Fnv1a(has_prompt ? p.text : j["messages"].dump())));
      p.prompt_id = buf;
    }
    if (!ids.insert(p.prompt_id).second)
      return where("duplicate prompt_id '" + p.prompt_id + "'");
    set.prompts.push_back(std::move(p));
    if (limit > 0 && static_cast<int64_t>(set.prompts.size()) >= limit) break;
  }
  if (set.prompts.empty()) return InvalidArgument(name + ": the prompt set is empty");
  return set;
}

std::vector<PromptRecord> PromptSet::Shard(uint32_t index, uint32_t count) const {
  std::vector<PromptRecord> out;
  if (count == 0 || index >= count) return out;
  const size_t n = prompts.size();
  const size_t begin = n * index / count;
  const size_t end = n * (index + 1) / count;
  for (size_t i = begin; i < end; ++i) {
    PromptRecord p = prompts[i];
    p.iteration = index;
    p.prompt_index = i - begin;
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace spar
