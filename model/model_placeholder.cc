// Placeholder until the model code lands.
