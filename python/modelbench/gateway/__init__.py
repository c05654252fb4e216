"""The gateway: many model servers behind one endpoint. Each upstream is an
OpenAI-compatible server; the replicas that serve one model name are tried in
the order a routing policy chooses, each guarded by its own circuit breaker,
so a slow or failing replica is skipped until it has cooled down. The gateway
sits below the server layer and imports nothing from it."""
