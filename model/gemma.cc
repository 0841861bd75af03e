// Gemma (GPM-Gemma-2B's backbone): RMSNorm as (1 + w) * normalise(x) in
// float32 (so the weights start at zero), embeddings scaled by
// sqrt(hidden_size) rounded to the activation dtype, a tanh-GeLU-gated MLP,
// head_dim from config.json (256 in gemma-2b) and a tied output head.
#include "model/layers.h"

namespace spar {

ArchitectureTraits GemmaTraits(const ModelConfig& config) {
  ArchitectureTraits traits;
  traits.name = "gemma";
  traits.norm_adds_one = true;
  traits.scale_embeddings = true;
  traits.activation =
      config.hidden_activation.empty() ? "gelu_pytorch_tanh" : config.hidden_activation;
  traits.norm_init = 0.0f;
  return traits;
}

}  // namespace spar
