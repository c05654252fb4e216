// placeholder until the sampler lands
