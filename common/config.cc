#include "common/config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

namespace spar {
namespace {

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: return "'" + node.Scalar() + "'";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "nothing";
  }
}

std::string Join(const std::set<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out.empty() ? "(none)" : out;
}

}  // namespace

ConfigNode::ConfigNode(YAML::Node node, std::string file, std::string path)
    : ConfigNode(std::move(node), std::make_shared<SharedState>(SharedState{std::move(file), {}}),
                 std::move(path)) {}

ConfigNode::ConfigNode(YAML::Node node, std::shared_ptr<SharedState> state, std::string path)
    : node_(std::move(node)), state_(std::move(state)), path_(std::move(path)) {
  if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap()) {
    state_->errors.push_back(state_->file + ": " + (path_.empty() ? "top level" : path_) +
                             ": must be a mapping of keys to values, got " + Describe(node_));
  }
}

Result<ConfigNode> ConfigNode::LoadString(const std::string& text, const std::string& name) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(name + ": not valid YAML at line " + std::to_string(e.mark.line + 1) +
                           ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  if (root.IsDefined() && !root.IsNull() && !root.IsMap()) {
    return InvalidArgument(name + ": the top level must be a mapping of keys to values, got " +
                           Describe(root));
  }
  return ConfigNode(root, name, "");
}

Result<ConfigNode> ConfigNode::LoadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("config file '" + path + "' cannot be read (missing or not permitted)");
  std::stringstream ss;
  ss << in.rdbuf();
  return LoadString(ss.str(), path);
}

std::string ConfigNode::KeyPath(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

bool ConfigNode::Has(const std::string& key) const {
  return node_.IsMap() && node_[key].IsDefined() && !node_[key].IsNull();
}

YAML::Node ConfigNode::Lookup(const std::string& key) {
  declared_.insert(key);
  if (!node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  YAML::Node value = node_[key];
  if (!value.IsDefined() || value.IsNull()) return YAML::Node(YAML::NodeType::Undefined);
  return value;
}

void ConfigNode::Error(const std::string& key, const std::string& message) {
  state_->errors.push_back(state_->file + ": " + KeyPath(key) + ": " + message);
}

template <typename T>
bool ConfigNode::Scalar(const std::string& key, T* out, const char* type_name) {
  YAML::Node value = Lookup(key);
  if (!value.IsDefined()) return false;
  if (!value.IsScalar()) {
    Error(key, std::string("must be ") + type_name + ", got " + Describe(value));
    return false;
  }
  try {
    *out = value.as<T>();
  } catch (const YAML::Exception&) {
    Error(key, std::string("must be ") + type_name + ", got " + Describe(value));
    return false;
  }
  return true;
}

void ConfigNode::Get(const std::string& key, std::string* out) { Scalar(key, out, "a string"); }

void ConfigNode::Get(const std::string& key, bool* out) { Scalar(key, out, "true or false"); }

void ConfigNode::Get(const std::string& key, int64_t* out, int64_t min, int64_t max) {
  int64_t v = *out;
  if (!Scalar(key, &v, "an integer")) return;
  if (v < min || v > max) {
    Error(key, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                   std::to_string(v));
    return;
  }
  *out = v;
}

void ConfigNode::Get(const std::string& key, int32_t* out, int32_t min, int32_t max) {
  int64_t v = *out;
  Get(key, &v, min, max);
  *out = static_cast<int32_t>(v);
}

void ConfigNode::Get(const std::string& key, uint32_t* out, uint32_t min, uint32_t max) {
  int64_t v = *out;
  Get(key, &v, min, max);
  *out = static_cast<uint32_t>(v);
}

void ConfigNode::Get(const std::string& key, uint64_t* out, uint64_t min, uint64_t max) {
  int64_t v = static_cast<int64_t>(*out);
  int64_t hi = max > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(max);
  Get(key, &v, static_cast<int64_t>(min), hi);
  *out = static_cast<uint64_t>(v);
}

void ConfigNode::Get(const std::string& key, double* out, double min, double max,
                     bool min_exclusive) {
  double v = *out;
  if (!Scalar(key, &v, "a number")) return;
  bool below = min_exclusive ? !(v > min) : !(v >= min);
  if (!std::isfinite(v) || below || v > max) {
    std::ostringstream msg;
    msg << "must be in " << (min_exclusive ? "(" : "[") << min << ", " << max << "], got " << v;
    Error(key, msg.str());
    return;
  }
  *out = v;
}

void ConfigNode::Get(const std::string& key, std::vector<std::string>* out) {
  YAML::Node value = Lookup(key);
  if (!value.IsDefined()) return;
  if (!value.IsSequence()) {
    Error(key, "must be a list of strings, got " + Describe(value));
    return;
  }
  std::vector<std::string> items;
  for (size_t i = 0; i < value.size(); ++i) {
    if (!value[i].IsScalar()) {
      Error(key + "[" + std::to_string(i) + "]", "must be a string, got " + Describe(value[i]));
      return;
    }
    items.push_back(value[i].Scalar());
  }
  *out = std::move(items);
}

void ConfigNode::Get(const std::string& key, std::vector<int64_t>* out) {
  YAML::Node value = Lookup(key);
  if (!value.IsDefined()) return;
  if (!value.IsSequence()) {
    Error(key, "must be a list of integers, got " + Describe(value));
    return;
  }
  std::vector<int64_t> items;
  for (size_t i = 0; i < value.size(); ++i) {
    try {
      items.push_back(value[i].as<int64_t>());
    } catch (const YAML::Exception&) {
      Error(key + "[" + std::to_string(i) + "]", "must be an integer, got " + Describe(value[i]));
      return;
    }
  }
  *out = std::move(items);
}

void ConfigNode::GetEnum(const std::string& key, std::string* out,
                         const std::vector<std::string>& allowed) {
  std::string v = *out;
  if (!Scalar(key, &v, "a string")) return;
  for (const auto& a : allowed) {
    if (v == a) {
      *out = v;
      return;
    }
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  Error(key, "'" + v + "' is not allowed; allowed values: " + list);
}

void ConfigNode::Require(const std::string& key) {
  declared_.insert(key);
  if (!Has(key)) Error(key, "missing required key");
}

ConfigNode ConfigNode::Child(const std::string& key) {
  YAML::Node value = Lookup(key);
  return ConfigNode(value, state_, KeyPath(key));
}

std::vector<ConfigNode> ConfigNode::ChildList(const std::string& key) {
  YAML::Node value = Lookup(key);
  std::vector<ConfigNode> out;
  if (!value.IsDefined()) return out;
  if (!value.IsSequence()) {
    Error(key, "must be a list, got " + Describe(value));
    return out;
  }
  for (size_t i = 0; i < value.size(); ++i) {
    out.push_back(ConfigNode(value[i], state_, KeyPath(key) + "[" + std::to_string(i) + "]"));
  }
  return out;
}

Status ConfigNode::Finish() {
  if (node_.IsMap()) {
    for (const auto& kv : node_) {
      std::string key = kv.first.as<std::string>("");
      if (declared_.count(key) == 0) {
        state_->errors.push_back(state_->file + ": " + KeyPath(key) + ": unknown key; allowed keys" +
                                 (path_.empty() ? "" : " in " + path_) + ": " + Join(declared_));
      }
    }
  }
  if (state_->errors.empty()) return Status::Ok();
  return InvalidArgument(state_->errors.front());
}

const std::vector<std::string>& KnownConfigSections() {
  static const std::vector<std::string> sections = {
      "log_level", "run", "prompts", "policy", "generation", "storage",
      "generator", "generators", "scorer", "learner", "bus", "metrics"};
  return sections;
}

}  // namespace spar
