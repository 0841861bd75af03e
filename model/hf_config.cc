#include "model/hf_config.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <utility>

#include "common/files.h"

namespace spar {

namespace {

using nlohmann::json;

constexpr const char* kActivations[] = {"silu", "gelu_pytorch_tanh", "gelu"};
constexpr const char* kDTypes[] = {"bfloat16", "float16", "float32"};

std::string TypeName(const json& value) {
  if (value.is_number_integer()) return "integer";
  if (value.is_number_float()) return "float";
  return value.type_name();
}

// Reads typed keys of one JSON object; every error starts with the source
// and names the key (dotted for nested objects, e.g. "rope_scaling.factor").
class KeyReader {
 public:
  KeyReader(const json& object, std::string source, std::string prefix = "")
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  Status Error(const std::string& key, const std::string& what) const {
    return InvalidArgument(source_ + ": key '" + prefix_ + key + "' " + what);
  }

  // The value of `key`, or nullptr when absent or null.
  const json* Get(const std::string& key) const {
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  Result<std::optional<int64_t>> OptionalInt(const std::string& key) const {
    const json* value = Get(key);
    if (value == nullptr) return std::optional<int64_t>();
    if (value->is_number_unsigned()) {
      uint64_t u = value->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(key, "is too large: " + value->dump());
      }
      return std::optional<int64_t>(static_cast<int64_t>(u));
    }
    if (value->is_number_integer()) return std::optional<int64_t>(value->get<int64_t>());
    return Error(key, "must be an integer, got " + TypeName(*value) + " " + value->dump());
  }

  Result<int64_t> Int(const std::string& key) const {
    SPAR_ASSIGN_OR_RETURN(std::optional<int64_t> value, OptionalInt(key));
    if (!value) return Error(key, "is missing");
    return *value;
  }

  Result<int64_t> Int(const std::string& key, int64_t fallback) const {
    SPAR_ASSIGN_OR_RETURN(std::optional<int64_t> value, OptionalInt(key));
    return value.value_or(fallback);
  }

  Result<std::optional<double>> OptionalDouble(const std::string& key) const {
    const json* value = Get(key);
    if (value == nullptr) return std::optional<double>();
    if (!value->is_number()) {
      return Error(key, "must be a number, got " + TypeName(*value) + " " + value->dump());
    }
    return std::optional<double>(value->get<double>());
  }

  Result<double> Double(const std::string& key, double fallback) const {
    SPAR_ASSIGN_OR_RETURN(std::optional<double> value, OptionalDouble(key));
    return value.value_or(fallback);
  }

  Result<double> Double(const std::string& key) const {
    SPAR_ASSIGN_OR_RETURN(std::optional<double> value, OptionalDouble(key));
    if (!value) return Error(key, "is missing");
    return *value;
  }

  Result<bool> Bool(const std::string& key, bool fallback) const {
    const json* value = Get(key);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) {
      return Error(key, "must be true or false, got " + TypeName(*value) + " " + value->dump());
    }
    return value->get<bool>();
  }

  Result<std::optional<std::string>> OptionalString(const std::string& key) const {
    const json* value = Get(key);
    if (value == nullptr) return std::optional<std::string>();
    if (!value->is_string()) {
      return Error(key, "must be a string, got " + TypeName(*value) + " " + value->dump());
    }
    return std::optional<std::string>(value->get<std::string>());
  }

  // A token id: absent or null -> nullopt; must fit int32.
  Result<std::optional<int32_t>> OptionalTokenId(const std::string& key) const {
    SPAR_ASSIGN_OR_RETURN(std::optional<int64_t> value, OptionalInt(key));
    if (!value) return std::optional<int32_t>();
    if (*value < std::numeric_limits<int32_t>::min() ||
        *value > std::numeric_limits<int32_t>::max()) {
      return Error(key, "is out of the int32 range: " + std::to_string(*value));
    }
    return std::optional<int32_t>(static_cast<int32_t>(*value));
  }

  // An int or a list of ints (eos_token_id); absent or null -> empty.
  Result<std::vector<int32_t>> TokenIdList(const std::string& key) const {
    const json* value = Get(key);
    std::vector<int32_t> ids;
    if (value == nullptr) return ids;
    if (!value->is_array()) {
      SPAR_ASSIGN_OR_RETURN(std::optional<int32_t> id, OptionalTokenId(key));
      ids.push_back(*id);
      return ids;
    }
    for (size_t i = 0; i < value->size(); ++i) {
      const json& item = (*value)[i];
      if (!item.is_number_integer() || item.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
          item.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Error(key, "must be an integer or a list of integers, got " + value->dump());
      }
      ids.push_back(static_cast<int32_t>(item.get<int64_t>()));
    }
    return ids;
  }

  bool Has(const std::string& key) const { return object_.contains(key); }

 private:
  const json& object_;
  std::string source_;
  std::string prefix_;
};

// The rope scaling object of either spelling: transformers 4.x's
// "rope_scaling" or 5.x's "rope_parameters" (which may carry rope_theta).
Status ParseRope(const json& j, const std::string& source, ModelConfig* config) {
  KeyReader top(j, source);
  SPAR_ASSIGN_OR_RETURN(config->rope_theta, top.Double("rope_theta", 10000.0));

  std::string key = "rope_scaling";
  const json* rope = top.Get("rope_parameters");
  if (rope != nullptr) {
    key = "rope_parameters";
  } else {
    rope = top.Get("rope_scaling");
  }
  config->rope_scaling = RopeScaling();
  if (rope == nullptr) return Status::Ok();
  if (!rope->is_object()) {
    return top.Error(key, "must be an object or null, got " + TypeName(*rope));
  }
  KeyReader reader(*rope, source, key + ".");
  if (key == "rope_parameters") {
    SPAR_ASSIGN_OR_RETURN(std::optional<double> theta, reader.OptionalDouble("rope_theta"));
    if (theta) config->rope_theta = *theta;
  }
  // transformers accepts the old "type" where "rope_type" is missing.
  std::string type_key = reader.Has("rope_type") ? "rope_type" : "type";
  SPAR_ASSIGN_OR_RETURN(std::optional<std::string> type, reader.OptionalString(type_key));
  if (!type || *type == "default") return Status::Ok();
  if (*type != "llama3") {
    return reader.Error(type_key, "'" + *type + "' is not supported (allowed: default, llama3)");
  }
  RopeScaling& scaling = config->rope_scaling;
  scaling.type = "llama3";
  SPAR_ASSIGN_OR_RETURN(scaling.factor, reader.Double("factor"));
  SPAR_ASSIGN_OR_RETURN(scaling.low_freq_factor, reader.Double("low_freq_factor"));
  SPAR_ASSIGN_OR_RETURN(scaling.high_freq_factor, reader.Double("high_freq_factor"));
  SPAR_ASSIGN_OR_RETURN(scaling.original_max_position_embeddings,
                        reader.Int("original_max_position_embeddings"));
  return Status::Ok();
}

// model_type first (it is what transformers dispatches on), then the
// architectures list.
Result<std::string> ResolveArchitecture(const json& j, const std::string& source,
                                        std::string* model_type) {
  KeyReader reader(j, source);
  SPAR_ASSIGN_OR_RETURN(std::optional<std::string> type, reader.OptionalString("model_type"));
  if (type) {
    *model_type = *type;
    if (*type == "llama" || *type == "gemma") return *type;
    return reader.Error("model_type", "'" + *type + "' is not supported (allowed: llama, gemma)");
  }
  const json* architectures = reader.Get("architectures");
  if (architectures == nullptr) {
    return reader.Error("model_type", "is missing (and there is no 'architectures' list)");
  }
  if (!architectures->is_array() || architectures->empty() || !(*architectures)[0].is_string()) {
    return reader.Error("architectures",
                        "must be a non-empty list of strings, got " + architectures->dump());
  }
  const std::string name = (*architectures)[0].get<std::string>();
  if (name == "LlamaForCausalLM") {
    *model_type = "llama";
  } else if (name == "GemmaForCausalLM") {
    *model_type = "gemma";
  } else {
    return reader.Error("architectures", "'" + name +
                                             "' is not supported (allowed: LlamaForCausalLM, "
                                             "GemmaForCausalLM)");
  }
  return *model_type;
}

template <size_t N>
bool OneOf(const std::string& value, const char* const (&allowed)[N]) {
  for (const char* a : allowed) {
    if (value == a) return true;
  }
  return false;
}

template <size_t N>
std::string Join(const char* const (&allowed)[N]) {
  std::string out;
  for (const char* a : allowed) {
    if (!out.empty()) out += ", ";
    out += a;
  }
  return out;
}

// --- Presets -------------------------------------------------------------------

constexpr int64_t kLlama3Vocab = 128256;
constexpr int32_t kLlama3Bos = 128000;        // <|begin_of_text|>
constexpr int32_t kLlama3EndOfText = 128001;  // <|end_of_text|>
constexpr int32_t kLlama3EomId = 128008;      // <|eom_id|> (Llama 3.1)
constexpr int32_t kLlama3EotId = 128009;      // <|eot_id|>
constexpr int64_t kGemmaVocab = 256000;
constexpr int32_t kGemmaPad = 0;
constexpr int32_t kGemmaEos = 1;
constexpr int32_t kGemmaBos = 2;
constexpr int32_t kGemmaEndOfTurn = 107;  // <end_of_turn>

ModelConfig LlamaBase() {
  ModelConfig c;
  c.architecture = "llama";
  c.model_type = "llama";
  c.vocab_size = kLlama3Vocab;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.tie_word_embeddings = false;
  c.bos_token_id = kLlama3Bos;
  c.eos_token_ids = {kLlama3EndOfText, kLlama3EotId};
  c.hidden_activation = "silu";
  return c;
}

RopeScaling Llama31RopeScaling() {
  RopeScaling r;
  r.type = "llama3";
  r.factor = 8.0;
  r.low_freq_factor = 1.0;
  r.high_freq_factor = 4.0;
  r.original_max_position_embeddings = 8192;
  return r;
}

ModelConfig GemmaBase() {
  ModelConfig c;
  c.architecture = "gemma";
  c.model_type = "gemma";
  c.vocab_size = kGemmaVocab;
  c.max_position_embeddings = 8192;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = true;
  c.bos_token_id = kGemmaBos;
  c.eos_token_ids = {kGemmaEos};
  c.pad_token_id = kGemmaPad;
  c.hidden_activation = "gelu_pytorch_tanh";
  return c;
}

void SetShape(ModelConfig* c, int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads,
              int64_t kv_heads, int64_t head_dim) {
  c->hidden_size = hidden;
  c->intermediate_size = intermediate;
  c->num_hidden_layers = layers;
  c->num_attention_heads = heads;
  c->num_key_value_heads = kv_heads;
  c->head_dim = head_dim;
}

std::optional<ModelConfig> LlamaPreset(const std::string& name) {
  ModelConfig c = LlamaBase();
  if (name == "tiny" || name == "tiny-tied") {
    // Small enough for 2 CPU cores; the real vocabulary and the Llama 3.1
    // RoPE scaling, whose three frequency bands all occur at head_dim 16.
    SetShape(&c, 64, 128, 2, 4, 2, 16);
    c.max_position_embeddings = 16384;
    c.rope_scaling = Llama31RopeScaling();
    c.tie_word_embeddings = name == "tiny-tied";
    c.torch_dtype = "float32";
  } else if (name == "small") {
    SetShape(&c, 256, 512, 4, 8, 4, 32);
    c.max_position_embeddings = 8192;
    c.torch_dtype = "float32";
  } else if (name == "llama3-8b") {
    SetShape(&c, 4096, 14336, 32, 32, 8, 128);
    c.max_position_embeddings = 8192;
    c.torch_dtype = "bfloat16";
  } else if (name == "llama3.1-8b") {
    SetShape(&c, 4096, 14336, 32, 32, 8, 128);
    c.max_position_embeddings = 131072;
    c.rope_scaling = Llama31RopeScaling();
    c.eos_token_ids = {kLlama3EndOfText, kLlama3EomId, kLlama3EotId};
    c.torch_dtype = "bfloat16";
  } else {
    return std::nullopt;
  }
  return c;
}

std::optional<ModelConfig> GemmaPreset(const std::string& name) {
  ModelConfig c = GemmaBase();
  if (name == "tiny" || name == "tiny-tied") {
    SetShape(&c, 64, 128, 2, 4, 1, 16);
    // The instruct model's stop tokens: <eos>, then <end_of_turn>.
    c.eos_token_ids = {kGemmaEos, kGemmaEndOfTurn};
    c.torch_dtype = "float32";
  } else if (name == "small") {
    SetShape(&c, 256, 512, 4, 4, 1, 64);
    c.eos_token_ids = {kGemmaEos, kGemmaEndOfTurn};
    c.torch_dtype = "float32";
  } else if (name == "gemma-2b") {
    SetShape(&c, 2048, 16384, 18, 8, 1, 256);
    c.torch_dtype = "bfloat16";
  } else {
    return std::nullopt;
  }
  return c;
}

}  // namespace

bool operator==(const RopeScaling& a, const RopeScaling& b) {
  if (a.type != b.type) return false;
  if (a.type.empty()) return true;  // the numbers mean nothing without a type
  return a.factor == b.factor && a.low_freq_factor == b.low_freq_factor &&
         a.high_freq_factor == b.high_freq_factor &&
         a.original_max_position_embeddings == b.original_max_position_embeddings;
}

bool operator==(const ModelConfig& a, const ModelConfig& b) {
  return a.architecture == b.architecture && a.model_type == b.model_type &&
         a.hidden_size == b.hidden_size && a.intermediate_size == b.intermediate_size &&
         a.num_hidden_layers == b.num_hidden_layers &&
         a.num_attention_heads == b.num_attention_heads &&
         a.num_key_value_heads == b.num_key_value_heads && a.head_dim == b.head_dim &&
         a.vocab_size == b.vocab_size && a.max_position_embeddings == b.max_position_embeddings &&
         a.rms_norm_eps == b.rms_norm_eps && a.rope_theta == b.rope_theta &&
         a.rope_scaling == b.rope_scaling && a.tie_word_embeddings == b.tie_word_embeddings &&
         a.bos_token_id == b.bos_token_id && a.eos_token_ids == b.eos_token_ids &&
         a.pad_token_id == b.pad_token_id && a.hidden_activation == b.hidden_activation &&
         a.torch_dtype == b.torch_dtype && a.attention_bias == b.attention_bias;
}

Result<ModelConfig> ModelConfig::FromJson(const json& j, const std::string& source_name) {
  if (!j.is_object()) {
    return InvalidArgument(source_name + ": config must be a JSON object, got " + TypeName(j));
  }
  KeyReader reader(j, source_name);
  ModelConfig c;
  SPAR_ASSIGN_OR_RETURN(c.architecture, ResolveArchitecture(j, source_name, &c.model_type));
  const bool gemma = c.architecture == "gemma";

  SPAR_ASSIGN_OR_RETURN(c.hidden_size, reader.Int("hidden_size"));
  SPAR_ASSIGN_OR_RETURN(c.intermediate_size, reader.Int("intermediate_size"));
  SPAR_ASSIGN_OR_RETURN(c.num_hidden_layers, reader.Int("num_hidden_layers"));
  SPAR_ASSIGN_OR_RETURN(c.num_attention_heads, reader.Int("num_attention_heads"));
  SPAR_ASSIGN_OR_RETURN(c.vocab_size, reader.Int("vocab_size"));
  // Defaults below are transformers' LlamaConfig / GemmaConfig defaults.
  SPAR_ASSIGN_OR_RETURN(c.num_key_value_heads,
                        reader.Int("num_key_value_heads", c.num_attention_heads));
  int64_t default_head_dim = 256;
  if (!gemma) {
    default_head_dim = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  }
  SPAR_ASSIGN_OR_RETURN(c.head_dim, reader.Int("head_dim", default_head_dim));
  SPAR_ASSIGN_OR_RETURN(c.max_position_embeddings,
                        reader.Int("max_position_embeddings", gemma ? 8192 : 2048));
  SPAR_ASSIGN_OR_RETURN(c.rms_norm_eps, reader.Double("rms_norm_eps", 1e-6));
  SPAR_RETURN_IF_ERROR(ParseRope(j, source_name, &c));
  SPAR_ASSIGN_OR_RETURN(c.tie_word_embeddings, reader.Bool("tie_word_embeddings", gemma));
  SPAR_ASSIGN_OR_RETURN(c.attention_bias, reader.Bool("attention_bias", false));
  SPAR_ASSIGN_OR_RETURN(bool mlp_bias, reader.Bool("mlp_bias", false));
  if (mlp_bias) return reader.Error("mlp_bias", "true is not supported (allowed: false)");

  // Token ids: an absent key takes the class default, an explicit null means
  // none, and a negative pad id (an old convention) means none too.
  if (reader.Has("bos_token_id")) {
    SPAR_ASSIGN_OR_RETURN(c.bos_token_id, reader.OptionalTokenId("bos_token_id"));
  } else {
    c.bos_token_id = gemma ? 2 : 1;
  }
  if (reader.Has("eos_token_id")) {
    SPAR_ASSIGN_OR_RETURN(c.eos_token_ids, reader.TokenIdList("eos_token_id"));
  } else {
    c.eos_token_ids = {gemma ? 1 : 2};
  }
  if (reader.Has("pad_token_id")) {
    SPAR_ASSIGN_OR_RETURN(c.pad_token_id, reader.OptionalTokenId("pad_token_id"));
    if (c.pad_token_id && *c.pad_token_id < 0) c.pad_token_id.reset();
  } else if (gemma) {
    c.pad_token_id = 0;
  }

  if (gemma) {
    SPAR_ASSIGN_OR_RETURN(std::optional<std::string> activation,
                          reader.OptionalString("hidden_activation"));
    // Gemma without hidden_activation means the tanh approximation, whatever
    // hidden_act says (transformers warns and does the same).
    c.hidden_activation = activation.value_or("gelu_pytorch_tanh");
    SPAR_ASSIGN_OR_RETURN(std::optional<std::string> act, reader.OptionalString("hidden_act"));
    (void)act;  // type-checked only
  } else {
    SPAR_ASSIGN_OR_RETURN(std::optional<std::string> act, reader.OptionalString("hidden_act"));
    c.hidden_activation = act.value_or("silu");
  }

  std::string dtype_key = reader.Get("torch_dtype") != nullptr ? "torch_dtype" : "dtype";
  SPAR_ASSIGN_OR_RETURN(std::optional<std::string> dtype, reader.OptionalString(dtype_key));
  c.torch_dtype = dtype.value_or("float32");

  Status valid = c.Validate();
  if (!valid.ok()) return valid.WithContext(source_name);
  return c;
}

Result<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  std::string file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    file = (std::filesystem::path(path) / "config.json").string();
  }
  SPAR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(file));
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return InvalidArgument(file + ": not valid JSON: " + e.what());
  }
  return FromJson(j, file);
}

Result<ModelConfig> ModelConfig::Preset(const std::string& arch, const std::string& preset) {
  std::optional<ModelConfig> config;
  if (arch == "llama") {
    config = LlamaPreset(preset);
  } else if (arch == "gemma") {
    config = GemmaPreset(preset);
  } else {
    return InvalidArgument("model architecture '" + arch +
                           "' is not supported (allowed: llama, gemma)");
  }
  if (!config) {
    std::string allowed;
    for (const auto& name : PresetNames(arch)) allowed += (allowed.empty() ? "" : ", ") + name;
    return InvalidArgument("no " + arch + " preset '" + preset + "' (allowed: " + allowed + ")");
  }
  return *config;
}

std::vector<std::string> ModelConfig::PresetNames(const std::string& arch) {
  if (arch == "llama") return {"tiny", "tiny-tied", "small", "llama3-8b", "llama3.1-8b"};
  if (arch == "gemma") return {"tiny", "tiny-tied", "small", "gemma-2b"};
  return {};
}

json ModelConfig::ToJson() const {
  const bool gemma = architecture == "gemma";
  json j = json::object();
  j["architectures"] = json::array({gemma ? "GemmaForCausalLM" : "LlamaForCausalLM"});
  j["model_type"] = model_type.empty() ? architecture : model_type;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {
        {"rope_type", rope_scaling.type},
        {"factor", rope_scaling.factor},
        {"low_freq_factor", rope_scaling.low_freq_factor},
        {"high_freq_factor", rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings},
    };
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id ? json(*bos_token_id) : json(nullptr);
  if (eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
  } else {
    j["eos_token_id"] = eos_token_ids;
  }
  j["pad_token_id"] = pad_token_id ? json(*pad_token_id) : json(nullptr);
  j["hidden_act"] = hidden_activation;
  if (gemma) j["hidden_activation"] = hidden_activation;
  j["torch_dtype"] = torch_dtype;
  j["dtype"] = torch_dtype;
  j["attention_bias"] = attention_bias;
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  if (!gemma) {
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  }
  return j;
}

json ModelConfig::GenerationConfigJson() const {
  json j = json::object();
  j["bos_token_id"] = bos_token_id ? json(*bos_token_id) : json(nullptr);
  if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
  } else if (!eos_token_ids.empty()) {
    j["eos_token_id"] = eos_token_ids;
  }
  if (pad_token_id) j["pad_token_id"] = *pad_token_id;
  return j;
}

Status ModelConfig::Validate() const {
  auto bad = [](const std::string& key, const std::string& what) {
    return InvalidArgument("key '" + key + "' " + what);
  };
  if (architecture != "llama" && architecture != "gemma") {
    return bad("model_type", "'" + architecture + "' is not supported (allowed: llama, gemma)");
  }
  const std::pair<const char*, int64_t> sizes[] = {
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"head_dim", head_dim},
      {"vocab_size", vocab_size},
      {"max_position_embeddings", max_position_embeddings},
  };
  for (const auto& [key, value] : sizes) {
    if (value <= 0) return bad(key, "must be positive, got " + std::to_string(value));
  }
  if (hidden_size % num_attention_heads != 0) {
    return bad("num_attention_heads", "(" + std::to_string(num_attention_heads) +
                                          ") must divide hidden_size (" +
                                          std::to_string(hidden_size) + ")");
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return bad("num_key_value_heads", "(" + std::to_string(num_key_value_heads) +
                                          ") must divide num_attention_heads (" +
                                          std::to_string(num_attention_heads) + ")");
  }
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps)) {
    return bad("rms_norm_eps", "must be positive, got " + std::to_string(rms_norm_eps));
  }
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) {
    return bad("rope_theta", "must be positive, got " + std::to_string(rope_theta));
  }
  if (!rope_scaling.type.empty()) {
    if (rope_scaling.type != "llama3") {
      return bad("rope_scaling.rope_type",
                 "'" + rope_scaling.type + "' is not supported (allowed: default, llama3)");
    }
    if (!(rope_scaling.factor >= 1) || !std::isfinite(rope_scaling.factor)) {
      return bad("rope_scaling.factor", "must be >= 1, got " + std::to_string(rope_scaling.factor));
    }
    if (!(rope_scaling.low_freq_factor > 0) || !std::isfinite(rope_scaling.low_freq_factor)) {
      return bad("rope_scaling.low_freq_factor",
                 "must be positive, got " + std::to_string(rope_scaling.low_freq_factor));
    }
    if (!(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor) ||
        !std::isfinite(rope_scaling.high_freq_factor)) {
      return bad("rope_scaling.high_freq_factor",
                 "must be greater than low_freq_factor, got " +
                     std::to_string(rope_scaling.high_freq_factor));
    }
    if (rope_scaling.original_max_position_embeddings <= 0) {
      return bad(
          "rope_scaling.original_max_position_embeddings",
          "must be positive, got " + std::to_string(rope_scaling.original_max_position_embeddings));
    }
  }
  auto check_id = [&](const char* key, int64_t id) -> Status {
    if (id < 0 || id >= vocab_size) {
      return bad(key, "(" + std::to_string(id) +
                          ") must be in [0, vocab_size=" + std::to_string(vocab_size) + ")");
    }
    return Status::Ok();
  };
  if (bos_token_id) SPAR_RETURN_IF_ERROR(check_id("bos_token_id", *bos_token_id));
  for (int32_t id : eos_token_ids) SPAR_RETURN_IF_ERROR(check_id("eos_token_id", id));
  if (pad_token_id) SPAR_RETURN_IF_ERROR(check_id("pad_token_id", *pad_token_id));
  if (!OneOf(hidden_activation, kActivations)) {
    return bad(
        architecture == "gemma" ? "hidden_activation" : "hidden_act",
        "'" + hidden_activation + "' is not supported (allowed: " + Join(kActivations) + ")");
  }
  if (!OneOf(torch_dtype, kDTypes)) {
    return bad("torch_dtype",
               "'" + torch_dtype + "' is not supported (allowed: " + Join(kDTypes) + ")");
  }
  return Status::Ok();
}

int64_t ModelConfig::NumParameters() const {
  const int64_t q = num_attention_heads * head_dim;
  const int64_t kv = num_key_value_heads * head_dim;
  int64_t attention = hidden_size * q + 2 * hidden_size * kv + q * hidden_size;
  if (attention_bias) attention += q + 2 * kv + hidden_size;
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t norms = 2 * hidden_size;
  const int64_t embeddings = vocab_size * hidden_size;
  int64_t total = embeddings + num_hidden_layers * (attention + mlp + norms) + hidden_size;
  if (!tie_word_embeddings) total += embeddings;
  return total;
}

}  // namespace spar
