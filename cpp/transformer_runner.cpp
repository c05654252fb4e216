// placeholder until the transformer_runner lands
