// spar/common/config.h — typed, validated YAML configuration.
//
// Every service has one typed config struct, filled by a `Read(ConfigNode&)`
// function that declares each key it accepts:
//
//   Status ReadStorage(ConfigNode node, StorageConfig* out) {
//     node.Get("db", &out->db);
//     node.Get("sync_writes", &out->sync_writes);
//     return node.Finish();
//   }
//
// A ConfigNode remembers which keys were read. Finish() reports the first
// problem: a value of the wrong type or out of range, a missing required
// key, or a key nobody declared ("unknown key 'tmperature'; allowed:
// ..."). Every message names the file and the full dotted key path, e.g.
//   examples/local.yaml: generator.sampling.top_p: must be in (0, 1], got 1.5
//
// Thread safety: a ConfigNode is used by one thread while a config loads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "common/status.h"

namespace spar {

class ConfigNode {
 public:
  // `file` names the source in messages; `path` is the dotted key path of
  // this node ("" at the root).
  ConfigNode(YAML::Node node, std::string file, std::string path);

  // Loads a YAML file. Errors: NotFound (no file), InvalidArgument (YAML
  // syntax error with line/column, or a top level that is not a mapping).
  static Result<ConfigNode> LoadFile(const std::string& path);
  static Result<ConfigNode> LoadString(const std::string& text, const std::string& name);

  bool Has(const std::string& key) const;

  // Optional scalars: absent -> *out unchanged (its default). Present with
  // the wrong type -> error recorded.
  void Get(const std::string& key, std::string* out);
  void Get(const std::string& key, bool* out);
  void Get(const std::string& key, int64_t* out, int64_t min = INT64_MIN, int64_t max = INT64_MAX);
  void Get(const std::string& key, int32_t* out, int32_t min = INT32_MIN, int32_t max = INT32_MAX);
  void Get(const std::string& key, uint32_t* out, uint32_t min = 0, uint32_t max = UINT32_MAX);
  void Get(const std::string& key, uint64_t* out, uint64_t min = 0, uint64_t max = UINT64_MAX);
  // Range check on doubles: [min, max], or (min, max] with min_exclusive.
  void Get(const std::string& key, double* out, double min = -1e308, double max = 1e308,
           bool min_exclusive = false);
  void Get(const std::string& key, std::vector<std::string>* out);
  void Get(const std::string& key, std::vector<int64_t>* out);

  // A string that must be one of `allowed`.
  void GetEnum(const std::string& key, std::string* out, const std::vector<std::string>& allowed);

  // Declares a key read elsewhere (another service's section of a shared
  // file), so Finish() does not call it unknown.
  void Ignore(const std::string& key) { declared_.insert(key); }

  // Marks a key as required: absent -> error "missing required key".
  void Require(const std::string& key);

  // A nested mapping; absent -> an empty node (all defaults). Type and
  // range errors inside are shared with this node; the child's unknown keys
  // are checked by the child's own Finish(), so call Finish() on every node
  // you read (each section's Read function does).
  ConfigNode Child(const std::string& key);
  // A sequence of mappings ("generators: [{address: ...}, ...]").
  std::vector<ConfigNode> ChildList(const std::string& key);

  // Records a custom validation failure for `key` ("must be a multiple of 8").
  void Error(const std::string& key, const std::string& message);

  // Checks this node for undeclared keys, then returns the first error
  // recorded anywhere in the file so far (InvalidArgument), or OK.
  Status Finish();

  const std::string& file() const { return state_->file; }
  // The YAML underneath, for sections read by their own services.
  const YAML::Node& raw() const { return node_; }
  std::string KeyPath(const std::string& key) const;

 private:
  struct SharedState {
    std::string file;
    std::vector<std::string> errors;
  };
  ConfigNode(YAML::Node node, std::shared_ptr<SharedState> state, std::string path);
  YAML::Node Lookup(const std::string& key);
  template <typename T>
  bool Scalar(const std::string& key, T* out, const char* type_name);

  YAML::Node node_;
  std::shared_ptr<SharedState> state_;
  std::string path_;
  std::set<std::string> declared_;
};

// The top-level sections of a spar config file. One file describes a whole
// deployment; each service reads its own section and leaves the others to
// their owners, while an unknown top-level key is still an error.
const std::vector<std::string>& KnownConfigSections();

}  // namespace spar
