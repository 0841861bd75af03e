// spar/model/hf_config.h — the config.json of a Hugging Face Llama or Gemma
// model folder, typed and validated.
//
// spar reads the same keys transformers does (including its defaults for
// absent optional keys and the transformers 5 spellings `dtype` and
// `rope_parameters`), and writes a config.json that transformers 4.x and 5.x
// both load as LlamaForCausalLM / GemmaForCausalLM.
//
// Thread safety: ModelConfig is a plain value.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace spar {

// RoPE frequency scaling. `type` is "" (plain RoPE, theta only) or "llama3"
// (Llama 3.1: frequencies whose wavelength exceeds
// original_max_position_embeddings / low_freq_factor are divided by
// `factor`, those shorter than original / high_freq_factor are kept, and
// the band between is interpolated smoothly).
struct RopeScaling {
  std::string type;
  double factor = 1;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  int64_t original_max_position_embeddings = 8192;

  friend bool operator==(const RopeScaling& a, const RopeScaling& b);
  friend bool operator!=(const RopeScaling& a, const RopeScaling& b) { return !(a == b); }
};

struct ModelConfig {
  std::string architecture;  // "llama" | "gemma"
  std::string model_type;    // as in config.json ("llama", "gemma")
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // config.json's, or hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // config.json's eos_token_id: an int or a list
  std::optional<int32_t> pad_token_id;
  // "silu" (llama) | "gelu_pytorch_tanh" (gemma) | "gelu" (exact erf GeLU).
  // Gemma reads hidden_activation; when that is absent it uses the tanh
  // approximation whatever hidden_act says, as transformers does (the
  // original gemma-2b config.json says "gelu" and means the approximation).
  std::string hidden_activation;
  std::string torch_dtype = "float32";  // "bfloat16" | "float16" | "float32"
  bool attention_bias = false;

  // Parses a config.json object. `source_name` (a path, "preset tiny", ...)
  // starts every error message. Errors are InvalidArgument naming the key:
  // a missing required key (hidden_size, intermediate_size,
  // num_hidden_layers, num_attention_heads, vocab_size, and model_type or
  // architectures), a key of the wrong type, an unsupported model_type or
  // rope type; then everything Validate() checks.
  static Result<ModelConfig> FromJson(const nlohmann::json& j, const std::string& source_name);
  // Reads and parses a config.json file; `path` may also be the model
  // folder that holds it. NotFound / Unavailable for I/O, InvalidArgument
  // for a file that is not JSON, then FromJson's errors.
  static Result<ModelConfig> FromFile(const std::string& path);
  // A built-in shape. arch "llama": "tiny" (hidden 64, 2 layers, 4 heads,
  // 2 kv heads, llama3 RoPE scaling, untied, float32, the real Llama-3
  // vocabulary and instruct bos/eos ids), "tiny-tied" (the same with tied
  // embeddings), "small" (hidden 256, 4 layers, 8 heads, 4 kv heads, plain
  // RoPE), "llama3-8b" (Meta-Llama-3-8B-Instruct), "llama3.1-8b"
  // (Llama-3.1-8B-Instruct: llama3 RoPE scaling, 128k positions).
  // arch "gemma": "tiny" (hidden 64, 2 layers, 4 heads, 1 kv head, tied,
  // float32, the real Gemma vocabulary), "tiny-tied" (= tiny), "small"
  // (hidden 256, 4 layers), "gemma-2b". InvalidArgument naming the allowed
  // values for anything else.
  static Result<ModelConfig> Preset(const std::string& arch, const std::string& preset);
  // The preset names of `arch` (empty for an unknown arch).
  static std::vector<std::string> PresetNames(const std::string& arch);

  // A config.json transformers loads: architectures, model_type and every
  // field above, in the legacy spellings (torch_dtype, rope_theta +
  // rope_scaling) that transformers 4.x reads and 5.x still accepts, plus
  // "dtype" for 5.x. FromJson(ToJson()) == *this.
  nlohmann::json ToJson() const;
  // generation_config.json: bos/eos/pad token ids.
  nlohmann::json GenerationConfigJson() const;

  // OK, or InvalidArgument naming the first bad key: non-positive sizes,
  // hidden_size not divisible by num_attention_heads, num_attention_heads
  // not divisible by num_key_value_heads, non-positive rms_norm_eps /
  // rope_theta, bad rope_scaling fields, token ids outside the vocabulary,
  // an unknown hidden_activation or torch_dtype. (No eos id is legal: some
  // scorer backbones have none.)
  Status Validate() const;

  // Parameters of the model this config describes (embeddings, attention,
  // MLP, norms, and lm_head unless tied). Llama-3-8B: 8,030,261,248.
  int64_t NumParameters() const;

  // The first eos id (the one GPM forces as the last token); -1 if none.
  int32_t primary_eos_token_id() const { return eos_token_ids.empty() ? -1 : eos_token_ids[0]; }

  friend bool operator==(const ModelConfig& a, const ModelConfig& b);
  friend bool operator!=(const ModelConfig& a, const ModelConfig& b) { return !(a == b); }
};

}  // namespace spar
