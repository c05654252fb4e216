"""GET /v1/models: every name a client may send. A bare name (routed among
its versions) comes first, then each ``name:version``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError
from modelbench.server.protocol import ModelCard, ModelList
from modelbench.server.registry import ModelHandle, ModelRegistry, ModelState
from modelbench.server.tool_prompt import TOOL_CALL_PARSER, ToolFormat, tool_format

router = APIRouter(tags=["models"])


def tools_of(handle: ModelHandle) -> ToolFormat | None:
    """How the version takes tools (None: not loaded, or no chat template)."""
    tokenizer = getattr(handle.engine, "tokenizer", None)
    return tool_format(getattr(tokenizer, "chat_template", None))


def version_card(handle: ModelHandle, registry: ModelRegistry) -> ModelCard:
    tools = tools_of(handle)
    predictor = handle.predictor
    tensor: dict[str, Any] = {}
    if predictor is not None:
        config = predictor.config
        tensor = {
            "inputs": [s.model_dump() for s in config.inputs],
            "outputs": [s.model_dump() for s in config.outputs],
            "labels": config.labels,
        }
    return ModelCard(
        id=handle.id,
        created=int(handle.loaded_at),
        root=handle.name,
        version=handle.version,
        tasks=handle.tasks,
        state=handle.state.value,
        routing=registry.policy(handle.name),
        default=handle.config.default,
        weight=handle.config.weight,
        outstanding=handle.outstanding,
        max_model_len=handle.max_model_len,
        tool_format=tools,
        tool_call_parser=TOOL_CALL_PARSER if tools else None,
        **tensor,
    )


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, registry: RegistryDep) -> ModelCard:
    """One entry of /v1/models (what the openai client's models.retrieve asks)."""
    for card in (await list_models(registry)).data:
        if card.id == model_id:
            return card
    raise APIError(
        404,
        f"The model {model_id!r} does not exist. Available models: "
        f"{', '.join(registry.available_ids()) or 'none'}",
        param="model",
        code="model_not_found",
        type="not_found_error",
    )


@router.get("/v1/models")
async def list_models(registry: RegistryDep) -> ModelList:
    handles = [h for h in registry.handles() if h.state != ModelState.UNLOADING]
    names = list(dict.fromkeys(h.name for h in handles))
    cards = []
    for name in names:
        versions = [h for h in handles if h.name == name]
        lens = [h.max_model_len for h in versions if h.max_model_len is not None]
        formats = {tools_of(h) for h in versions} - {None}
        tools = formats.pop() if len(formats) == 1 else None  # versions that differ: see each
        cards.append(
            ModelCard(
                id=name,
                created=int(min(h.loaded_at for h in versions)),
                root=name,
                tasks=sorted({t for h in versions for t in h.tasks}),
                routing=registry.policy(name),
                max_model_len=min(lens) if lens else None,
                tool_format=tools,
                tool_call_parser=TOOL_CALL_PARSER if tools else None,
            )
        )
    cards += [version_card(h, registry) for h in handles]
    if registry.gateway is not None:
        for pool in registry.gateway.pools.values():
            cards.append(
                ModelCard(
                    id=pool.name,
                    root=pool.name,
                    owned_by="upstream",
                    tasks=["generate"],
                    state="ready" if pool.is_ready else "unavailable",
                    routing=pool.router.policy,
                )
            )
    return ModelList(data=cards)
