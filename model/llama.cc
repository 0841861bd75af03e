// Llama-3 / 3.1: RMSNorm as w * normalise(x), SiLU-gated MLP, embeddings
// unscaled, lm_head tied or not as config.json says. Everything else lives
// in the shared blocks.
#include "model/layers.h"

namespace spar {

ArchitectureTraits LlamaTraits(const ModelConfig& config) {
  ArchitectureTraits traits;
  traits.name = "llama";
  traits.norm_adds_one = false;
  traits.scale_embeddings = false;
  traits.activation = config.hidden_activation.empty() ? "silu" : config.hidden_activation;
  traits.norm_init = 1.0f;
  return traits;
}

}  // namespace spar
