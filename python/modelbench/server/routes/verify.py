"""POST /v1/verify: ask several models for code, run every answer in the
sandbox against tests, and answer only with code that passed.

The models are asked as ``/v1/compare`` asks them (local or remote, at once,
each within its deadline, one record per model, the records' ``compare_id``
holding the verify id). The code, the tests and the choice are
``modelbench.eval.verify``'s; the candidates run in the app's one
``Sandbox`` (built on first use, as many at once as the host has CPUs), off
the event loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from modelbench.config import Settings
from modelbench.eval.sandbox import Sandbox, default_masks
from modelbench.eval.verify import LANGUAGES, VERIFY_LIMITS, Verdict, extract_code, verify
from modelbench.eval.verify_tests import TestSuite, VerifyInputError, build_tests
from modelbench.server.content_type import JSON_BODY
from modelbench.server.dependencies import RegistryDep
from modelbench.server.errors import APIError
from modelbench.server.openapi import array_limit, error_responses
from modelbench.server.protocol import ErrorInfo, random_id
from modelbench.server.protocol_fields import INVALID_TESTS
from modelbench.server.routes.compare import (
    CompareRequest,
    CompareResult,
    ask_each,
    check,
    deadline_of,
    max_compare_models,
    one_request,
)

router = APIRouter(tags=["verify"])
logger = logging.getLogger("modelbench.server")


class VerifyRequest(CompareRequest):
    """``models`` and a chat (``messages``) or completion (``prompt``)
    request, with the sampling fields and ``deadline_s`` as compare takes
    them (``stream`` is refused: the answer comes once every candidate ran),
    and what to run the answers against."""

    language: str = Field(default="python", description="the answers' language: python")
    tests: str | None = Field(
        default=None,
        description="Python asserts, or test functions (HumanEval's check(candidate), "
        "test_*()); without them the prompt's doctest examples are the tests",
    )
    entry_point: str | None = Field(
        default=None,
        description="the function the tests check; default: one the prompt defines and "
        "the tests call, else the first the tests call",
    )


array_limit("post", "/v1/verify", "models", lambda app: max_compare_models(app.state.registry))


class VerifyResult(BaseModel):
    """One model's answer: its code and how it did against the tests."""

    model: str
    served_by: str | None = None
    code: str | None = None  # None: the model gave no answer (see error)
    passed: bool
    reason: str  # "passed", or why not
    output: str = ""  # the end of the run's stdout, then stderr
    extra_outputs: list[str] | None = None  # what it did on agreement.inputs, when compared
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    ttft_ms: float | None = None
    generation_ms: float | None = None
    run_ms: float | None = None
    error: ErrorInfo | None = None  # the model's own failure


class VerifyChoice(BaseModel):
    index: int  # into results
    model: str
    code: str


class VerifyAgreement(BaseModel):
    """What the passing candidates did on extra inputs: ``groups`` of result
    indexes that behaved alike, in the order of their first member; inputs
    on which one of them ran out of time are ``left_out`` of the comparison."""

    inputs: list[str]
    left_out: list[str]
    groups: list[list[int]]


class VerifyResponse(BaseModel):
    verify_id: str
    object: Literal["verify"] = "verify"
    verified: bool
    chosen: VerifyChoice | None = None
    reason: str
    isolation: str  # the sandbox that ran the code: bubblewrap or rlimits
    language: str
    entry_point: str | None = None
    tests: str  # what ran after each answer's code
    tests_from: Literal["tests", "doctests"]
    agreement: VerifyAgreement | None = None
    results: list[VerifyResult]


@router.post(
    "/v1/verify",
    response_model=VerifyResponse,
    dependencies=JSON_BODY,
    responses=error_responses(404),
)
async def verify_answers(
    body: VerifyRequest, request: Request, registry: RegistryDep
) -> VerifyResponse:
    asked = CompareRequest.model_validate(
        body.model_dump(exclude={"language", "tests", "entry_point"}, exclude_none=True)
    )
    check(asked, registry, max_compare_models(registry))
    suite = tests_of(body)
    requests = [one_request(asked, m) for m in asked.models]
    verify_id = random_id("vfy")
    answers = await ask_each(request, registry, requests, deadline_of(asked, registry), verify_id)
    codes = [
        None if a.error is not None else extract_code(text_of(a.output), body.prompt)
        for a in answers
    ]
    no_answer = [f"no answer: {a.error.message}" if a.error else "" for a in answers]
    sandbox = sandbox_of(request.app)
    tracer = request.app.state.tracer
    if tracer is None:
        verdict = await asyncio.to_thread(verify, sandbox, codes, suite, VERIFY_LIMITS, no_answer)
        return response(verify_id, body, suite, answers, verdict)
    attributes = {
        "modelbench.sandbox.isolation": sandbox.isolation,
        "modelbench.verify.candidates": sum(code is not None for code in codes),
    }
    with tracer.start_as_current_span("sandbox verify", attributes=attributes) as span:
        verdict = await asyncio.to_thread(verify, sandbox, codes, suite, VERIFY_LIMITS, no_answer)
        span.set_attribute("modelbench.verify.verified", verdict.chosen is not None)
    return response(verify_id, body, suite, answers, verdict)


def tests_of(body: VerifyRequest) -> TestSuite:
    """The checks a compare request does not make, then the tests (400s
    naming the field)."""
    if body.stream:
        raise APIError(
            400,
            "stream is not supported by /v1/verify: its answer comes once every candidate "
            "has run; leave stream out (or use /v1/compare to watch answers arrive)",
            param="stream",
            code=INVALID_TESTS,
        )
    if body.language.lower() not in LANGUAGES:
        raise APIError(
            400,
            f"language {body.language!r} is not supported; supported: {', '.join(LANGUAGES)}",
            param="language",
            code=INVALID_TESTS,
        )
    prompt_param = "messages" if body.messages is not None else "prompt"
    prompt = body.prompt or "\n".join(
        str(m.for_template().get("content") or "") for m in body.messages or []
    )
    try:
        return build_tests(prompt, body.tests, body.entry_point, prompt_param)
    except VerifyInputError as exc:
        raise APIError(400, str(exc), param=exc.param, code=INVALID_TESTS) from exc


def text_of(output: Any) -> str:
    if isinstance(output, dict):
        return str(output.get("content") or "")
    return "" if output is None else str(output)


def sandbox_of(app: FastAPI) -> Sandbox:
    """The app's sandbox, built on first use (no await in between: one per app)."""
    sandbox: Sandbox | None = getattr(app.state, "verify_sandbox", None)
    if sandbox is None:
        masks = [*default_masks(), *server_folders(app.state.settings)]
        sandbox = app.state.verify_sandbox = Sandbox(limits=VERIFY_LIMITS, masks=masks)
        logger.info(
            "verify runs candidates under %s isolation, %d at once",
            sandbox.isolation,
            sandbox.concurrency,
        )
    return sandbox


def server_folders(settings: Settings) -> list[Path]:
    """Folders of this server's that candidates must not see, beyond the
    defaults: the keys file's, the SQLite store's, the models' and the
    models file's."""
    paths = [p for p in (settings.keys_file, settings.models_file) if p is not None]
    paths += settings.model_dirs
    models = settings.model if isinstance(settings.model, list) else [settings.model]
    paths += [Path(m) for m in models if m and Path(m).exists()]
    url = settings.database_url or ""
    if url.startswith("sqlite:///"):
        paths.append(Path(url.removeprefix("sqlite:///")))
    return [p.resolve() if p.is_dir() else p.resolve().parent for p in paths]


def response(
    verify_id: str,
    body: VerifyRequest,
    suite: TestSuite,
    answers: list[CompareResult],
    verdict: Verdict,
) -> VerifyResponse:
    results = []
    for answer, candidate in zip(answers, verdict.candidates, strict=True):
        results.append(
            VerifyResult(
                model=answer.model,
                served_by=answer.served_by,
                code=candidate.code,
                passed=candidate.passed,
                reason=candidate.reason,
                output=candidate.output,
                extra_outputs=None
                if candidate.outcomes is None
                else [str(o) for o in candidate.outcomes],
                finish_reason=answer.finish_reason,
                usage=answer.usage,
                ttft_ms=answer.ttft_ms,
                generation_ms=answer.latency_ms,
                run_ms=None if candidate.run_s is None else round(candidate.run_s * 1e3, 3),
                error=answer.error,
            )
        )
    chosen = None
    if verdict.chosen is not None:
        code = verdict.candidates[verdict.chosen].code
        assert code is not None, "only code that ran can be chosen"
        chosen = VerifyChoice(index=verdict.chosen, model=answers[verdict.chosen].model, code=code)
    return VerifyResponse(
        verify_id=verify_id,
        verified=verdict.verified,
        chosen=chosen,
        reason=verdict.reason,
        isolation=verdict.isolation,
        language=body.language.lower(),
        entry_point=suite.entry_point,
        tests=suite.source,
        tests_from="doctests" if suite.origin == "doctests" else "tests",
        agreement=VerifyAgreement(
            inputs=verdict.probes, left_out=verdict.left_out, groups=verdict.groups
        )
        if verdict.groups
        else None,
        results=results,
    )
