"""The served-model backend: judging a model behind an OpenAI-compatible API (``vllm serve``,
TGI, llama.cpp's server, a hosted API).

    pip install 'vat-hf[openai]'
    export OPENAI_API_KEY=...            # or --api_key_file; the key is read, never written
    vat-hf eval --backend openai --base_url http://127.0.0.1:8000/v1 --model_name smollm2 \\
        --model HuggingFaceTB/SmolLM2-135M-Instruct -o judgments.jsonl   # --model: the tokenizer

The client is the ``openai`` package's: it retries timeouts, dropped connections, 408, 409, 429
and 5xx answers with exponential backoff (or the server's ``Retry-After``) and times requests
out; ``max_retries`` and ``request_timeout`` are passed to it. Requests run ``max_concurrency``
at a time (the server batches them). A response that is not the JSON it should be is retried
the same number of times. When a request still fails, the requests in flight finish, every
finished judgment is already in the judgment cache, and the error says so: rerunning the same
command judges only the rest.

Endpoints (``api``): ``completions`` sends the evaluator's exact prompt as token ids (the
tokenizer, named by ``--model``, renders and encodes it as the transformers path does); ``chat``
sends the messages, with the assistant's answer opened by "Rating: " (vLLM's
``continue_final_message``; a server that refuses it gets the messages alone). ``auto``:
completions when the tokenizer is there, else chat.

How an item is scored (its record's ``score_path``, :data:`~vat_hf.evaluation.task.SCORE_PATHS`),
in ``logprob`` mode, the first that the server supports:

1. ``token-ids``: vLLM's ``logprob_token_ids`` returns the five options' own log-probabilities
   at the answer's first token (a server that refuses the field, or ignores it, is not asked again);
2. ``top-k``: the first token's ``top_logprobs`` (``top_logprobs`` of them), options read by
   their token text (or ``token_id:N`` keys) when all five are there;
3. ``per-option`` (completions): each option appended to the prompt, ``echo`` with
   ``logprobs`` giving its tokens' log-probabilities, for the items whose options are not all
   in the top k (five requests per item);
4. ``generate``: the greedy answer parsed, where the server returns no log-probabilities.

``logprob-multitoken`` mode scores every item ``per-option``; ``generate`` mode always generates.
A request the server refuses as bad input (HTTP 400, e.g. a prompt over its context) records
the item as missing with the server's words; an unreachable server, a refused key (401/403)
and a model the server does not serve (404) stop the run with an error that says what to fix.
The key is only handed to the client: it is not an :class:`~vat_hf.evaluation.config.EvalConfig`
field (only where to read it), so no results file, sample, card, cache or log line holds it.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from vat_hf.errors import VatHfError
from vat_hf.evaluation.task import (
    MODE_GENERATE,
    MODE_LOGPROB,
    MODE_MULTITOKEN,
    JudgeStats,
    TokenRequest,
    distribution_outputs,
    generated_outputs,
    judge_cached,
    missing_outputs,
    option_token_ids,
    request_outputs,
    token_requests,
)
from vat_hf.prompts import OPTIONS, RATING_PREFIX, JudgePrompt

logger = logging.getLogger(__name__)

OPENAI_INSTALL_HINT = "the served-model backend needs the openai client: pip install 'vat-hf[openai]'"
NO_KEY = "no-key"
"""Sent when no key is configured (servers without authentication accept any; the openai client
refuses an empty one)."""
APIS = ("completions", "chat")


class ServedModelError(VatHfError, RuntimeError):
    """The server cannot be used as configured (unreachable, key refused, model not served) or
    kept failing; says what to fix and what was kept."""


def require_openai():
    try:
        import openai  # noqa: F401
    except ImportError as err:
        raise ImportError(OPENAI_INSTALL_HINT) from err
    return openai


def read_api_key(env: Optional[str], key_file: Optional[str]) -> Optional[str]:
    """The API key from ``key_file`` (its first line) or the environment variable ``env``;
    None when neither holds one. A named file that does not exist is an error."""
    if key_file:
        path = Path(os.path.expanduser(key_file))
        if not path.is_file():
            raise ServedModelError(f"API key file {path} does not exist", fix="give a file holding the key, or use --api_key_env")
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise ServedModelError(f"API key file {path} is empty")
        return key
    key = os.environ.get(env) if env else None
    return key.strip() if key and key.strip() else None


def _message(err: Exception) -> str:
    """The server's words for an HTTP error (the OpenAI error object's message, or vLLM's string)."""
    body = getattr(err, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            return str(inner.get("message") or inner)
        return str(inner)
    return str(getattr(err, "message", None) or err)


class MalformedResponse(ValueError):
    """A 200 answer that is not the JSON of the endpoint (retried like a 5xx)."""


class ServedEvaluator:
    """Judges items with a model served over an OpenAI-compatible API; :meth:`judge` returns
    records like :meth:`vat_hf.evaluation.Evaluator.judge`, each with its ``score_path``.

    ``tokenizer``: the served model's tokenizer (needed by the completions endpoint and by
    ``logprob-multitoken`` mode; optional for chat); ``api_key``: the key itself, from
    :func:`read_api_key`. The server is asked which models it serves on the first request that
    needs it (:meth:`connect`)."""

    def __init__(self, base_url: str, model_name: Optional[str] = None, prompt: Optional[JudgePrompt] = None,
                 tokenizer=None, api: str = "auto", mode: str = "auto", max_length: Optional[int] = None,
                 truncation: str = "refuse", max_new_tokens: int = 8, top_logprobs: int = 20,
                 max_concurrency: int = 8, request_timeout: float = 120.0, max_retries: int = 5,
                 api_key: Optional[str] = None, progress: bool = True, cache=None, api_key_source: str = "the API key"):
        openai = require_openai()
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.prompt = prompt or JudgePrompt()
        self.tokenizer = tokenizer
        if api == "auto":
            api = "completions" if tokenizer is not None else "chat"
        if api not in APIS:
            raise ValueError(f"api {api!r} is not 'auto' or one of {APIS}")
        if api == "completions" and tokenizer is None:
            raise ServedModelError("the completions endpoint needs the served model's tokenizer (the prompt goes "
                                   "as token ids)", fix="name it with --model (a Hub id or folder), or use --api chat")
        self.api = api
        self.mode, self.option_ids = self._resolve_mode(mode)
        if self.mode == MODE_MULTITOKEN and api != "completions":
            raise ServedModelError("logprob-multitoken mode scores each option through the completions endpoint's "
                                   "echo", fix="use --api completions (with --model naming the tokenizer)")
        self.option_texts = ([tokenizer.decode([t]) for t in self.option_ids] if self.option_ids else list(OPTIONS))
        self.max_length = max_length
        self.truncation = truncation
        self.max_new_tokens = max_new_tokens
        self.top_logprobs = top_logprobs
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.progress = progress
        self.cache = cache
        self.key_source = api_key_source
        self.template = "chat" if api == "chat" or getattr(tokenizer, "chat_template", None) else "plain"
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or NO_KEY, timeout=request_timeout,
                                    max_retries=max_retries)
        self.server_model: Optional[Dict[str, Any]] = None
        # What the server turned out to support (None: not asked yet); set once, read by every request.
        self.supports: Dict[str, Optional[bool]] = {"token_ids": None if self.option_ids else False,
                                                    "echo": None, "prefill": None}
        self._lock = threading.Lock()
        self.stats = JudgeStats()
        self.path_counts: Dict[str, int] = {}

    def _resolve_mode(self, mode: str):
        from vat_hf.evaluation.task import resolve_mode

        if self.tokenizer is not None:
            return resolve_mode(self.tokenizer, mode)
        if mode == "auto":  # no tokenizer: the options are taken to be the single tokens "1".."5"
            return MODE_LOGPROB, None
        return mode, None

    # -- the server ----------------------------------------------------------------------------
    def _explained(self, err: Exception) -> ServedModelError:
        """A :class:`ServedModelError` saying what ``err`` (from the openai client) means here."""
        openai = require_openai()
        where = f"the server at {self.base_url}"
        if isinstance(err, openai.AuthenticationError) or isinstance(err, openai.PermissionDeniedError):
            return ServedModelError(f"{where} refused the API key (HTTP {err.status_code}: {_message(err)})",
                                    fix=f"set {self.key_source} to the key this server expects")
        if isinstance(err, openai.NotFoundError):
            return ServedModelError(f"{where} does not serve model {self.model_name!r} (HTTP 404: {_message(err)})",
                                    fix="give --model_name one of the models it lists (GET /v1/models)")
        if isinstance(err, openai.APITimeoutError):
            return ServedModelError(f"{where} did not answer within the timeout, {self.max_retries} retries included",
                                    fix="raise --request_timeout, lower --max_concurrency, or check the server")
        if isinstance(err, openai.APIConnectionError):
            return ServedModelError(f"cannot reach {where} ({err.__cause__ or err}), {self.max_retries} retries "
                                    "included", fix="is the server running, and is --base_url its address "
                                                    "(with /v1)?")
        if isinstance(err, openai.APIStatusError):
            return ServedModelError(f"{where} kept failing: HTTP {err.status_code} ({_message(err)}) after "
                                    f"{self.max_retries} retries")
        if isinstance(err, MalformedResponse):
            return ServedModelError(f"{where} kept sending malformed answers after {self.max_retries} retries: {err}")
        return ServedModelError(f"{where}: {type(err).__name__}: {err}")

    def connect(self) -> Dict[str, Any]:
        """Ask the server which models it serves (``GET /models``); pick ``model_name`` (or the one
        model listed) and remember its entry (``root``, ``max_model_len`` where vLLM gives them)."""
        if self.server_model is not None:
            return self.server_model
        openai = require_openai()
        try:
            listed = [m.model_dump() for m in self.client.models.list()]
        except openai.NotFoundError:  # some servers do not list models: take the name as given
            listed = None
        except openai.OpenAIError as err:
            raise self._explained(err) from None
        if listed is not None:
            names = [m.get("id") for m in listed]
            if self.model_name is None:
                if len(names) != 1:
                    raise ServedModelError(f"the server at {self.base_url} serves {len(names)} models {names}",
                                           fix="choose one with --model_name")
                self.model_name = names[0]
            if self.model_name not in names:
                raise ServedModelError(f"the server at {self.base_url} does not serve model {self.model_name!r}; "
                                       f"it serves {names}", fix="give --model_name one of those")
            entry = listed[names.index(self.model_name)]
        else:
            if self.model_name is None:
                raise ServedModelError(f"the server at {self.base_url} does not list its models",
                                       fix="name the model with --model_name")
            entry = {"id": self.model_name}
        self.server_model = {k: entry.get(k) for k in ("id", "root", "owned_by", "max_model_len") if entry.get(k) is not None}
        if self.max_length is None and isinstance(entry.get("max_model_len"), int):
            self.max_length = entry["max_model_len"]
        return self.server_model

    def _call(self, create, **body) -> Dict[str, Any]:
        """One request through the openai client (its retries), as a plain dict; a malformed
        answer is retried ``max_retries`` times with backoff."""
        openai = require_openai()
        for attempt in range(self.max_retries + 1):
            try:
                response = create(model=self.model_name, **body)
                data = response.model_dump() if hasattr(response, "model_dump") else response
                if not isinstance(data, Mapping) or not isinstance(data.get("choices"), list) or not data["choices"]:
                    raise MalformedResponse(f"no choices in {str(data)[:200]!r}")
                return dict(data)
            except (MalformedResponse, openai.APIResponseValidationError, json.JSONDecodeError) as err:
                if attempt == self.max_retries:
                    raise MalformedResponse(str(err)) from None
                logger.warning("malformed answer from %s (%s); retrying", self.base_url, str(err)[:200])
                time.sleep(min(8.0, 0.5 * 2 ** attempt) * (1 - 0.25 * random.random()))
        raise AssertionError("unreachable")

    # -- request bodies -------------------------------------------------------------------------
    def _messages(self, item: Mapping, prefill: bool) -> List[Dict[str, str]]:
        messages = self.prompt.messages(item)
        return messages + [{"role": "assistant", "content": RATING_PREFIX}] if prefill else messages

    def _first_token(self, request: TokenRequest, item: Mapping, extra: Dict[str, Any], k: Optional[int]) -> Dict:
        """The first generated token's log-probabilities as ``{key: logprob}`` (keys: token text,
        or ``token_id:N``), with the response's prompt length."""
        if self.api == "completions":
            data = self._call(self.client.completions.create, prompt=request.ids, max_tokens=1, temperature=0,
                              logprobs=k, extra_body=extra or None)
            logprobs = (data["choices"][0].get("logprobs") or {}).get("top_logprobs") or []
            top = logprobs[0] if logprobs else None
            if top is None:
                return {"top": None, "data": data}
            return {"top": {str(key): float(v) for key, v in top.items()}, "data": data}
        prefill = self.supports["prefill"] is not False
        body = dict(messages=self._messages(item, prefill), max_tokens=1, temperature=0, logprobs=True,
                    top_logprobs=k if not extra else None)
        chat_extra = dict(extra)
        if prefill:
            chat_extra.update(continue_final_message=True, add_generation_prompt=False)
        data = self._call(self.client.chat.completions.create, **body, extra_body=chat_extra or None)
        content = ((data["choices"][0].get("logprobs") or {}).get("content") or [])
        if not content:
            return {"top": None, "data": data}
        return {"top": {str(e["token"]): float(e["logprob"]) for e in content[0].get("top_logprobs") or []}, "data": data}

    def _options_from(self, top: Optional[Mapping[str, float]]) -> Optional[List[float]]:
        """The five options' log-probabilities from a first-token dict, or None if one is absent."""
        if not top:
            return None
        values = []
        for k, text in enumerate(self.option_texts):
            key = f"token_id:{self.option_ids[k]}" if self.option_ids else None
            if key is not None and key in top:
                values.append(top[key])
            elif text in top:
                values.append(top[text])
            else:
                return None
        return values

    # -- scoring one item -------------------------------------------------------------------------
    def _score(self, request: TokenRequest, item: Mapping) -> Dict:
        openai = require_openai()
        if self.mode == MODE_GENERATE:
            return self._answer(request, item)
        if self.mode == MODE_LOGPROB:
            if self.supports["token_ids"] is not False:
                extra = {"logprob_token_ids": list(self.option_ids)}
                if self.api == "completions":
                    extra["return_tokens_as_token_ids"] = True
                try:
                    got = self._first_token(request, item, extra, len(self.option_ids))
                    values = self._options_from(got["top"])
                except openai.BadRequestError as err:
                    if "logprob_token_ids" not in _message(err) and "extra" not in _message(err).lower():
                        raise
                    values = None
                if values is not None:
                    self._learned("token_ids", True)
                    return self._scored(request, values, "token-ids")
                self._learned("token_ids", False)  # refused, or ignored (the top-k came back)
            got = self._first_token(request, item, {}, self.top_logprobs)
            if self.api == "chat" and self.supports["prefill"] is None:
                self._learned("prefill", True)
            values = self._options_from(got["top"])
            if values is not None:
                return self._scored(request, values, "top-k")
            if got["top"] is None and self.api == "completions":
                self._learned("echo", False)  # no log-probabilities at all: echo will not have them either
        if self.api == "completions" and self.supports["echo"] is not False:
            values = self._per_option(request)
            if values is not None:
                return self._scored(request, values, "per-option")
        return self._answer(request, item)

    def _learned(self, what: str, value: bool) -> None:
        with self._lock:
            if self.supports[what] is None or (self.supports[what] and not value):
                if self.supports[what] is None:
                    logger.info("server %s: %s %s", self.base_url, what, "supported" if value else "not supported")
                self.supports[what] = value

    def _scored(self, request: TokenRequest, values: Sequence[float], path: str) -> Dict:
        return request_outputs(request, distribution_outputs(values, self.mode), path)

    def _per_option(self, request: TokenRequest) -> Optional[List[float]]:
        """Each option appended to the prompt; ``echo`` returns the log-probability of every prompt
        token, and an option's score is the sum over its tokens. None where the server does not."""
        openai = require_openai()
        conts = request.conts if request.conts is not None else [[t] for t in self.option_ids]
        values = []
        for cont in conts:
            try:
                data = self._call(self.client.completions.create, prompt=request.ids + list(cont), max_tokens=1,
                                  temperature=0, logprobs=0, echo=True)
            except openai.BadRequestError as err:
                if "echo" not in _message(err).lower():
                    raise
                self._learned("echo", False)
                return None
            token_logprobs = (data["choices"][0].get("logprobs") or {}).get("token_logprobs") or []
            span = token_logprobs[len(request.ids):len(request.ids) + len(cont)]
            if len(token_logprobs) < len(request.ids) + len(cont) or any(v is None for v in span):
                self._learned("echo", False)
                return None
            values.append(float(sum(span)))
        self._learned("echo", True)
        return values

    def _answer(self, request: TokenRequest, item: Mapping) -> Dict:
        if self.api == "completions":
            data = self._call(self.client.completions.create, prompt=request.ids, max_tokens=self.max_new_tokens,
                              temperature=0)
            text = data["choices"][0].get("text") or ""
        else:
            prefill = self.supports["prefill"] is not False
            extra = {"continue_final_message": True, "add_generation_prompt": False} if prefill else None
            data = self._call(self.client.chat.completions.create, messages=self._messages(item, prefill),
                              max_tokens=self.max_new_tokens, temperature=0, extra_body=extra)
            text = ((data["choices"][0].get("message") or {}).get("content")) or ""
        out = request_outputs(request, generated_outputs(text), "generate")
        if self.api == "chat":
            out["n_tokens"] = (data.get("usage") or {}).get("prompt_tokens")
        return out

    def _judge_one(self, request: TokenRequest, item: Mapping) -> Tuple[Dict, bool]:
        """(outputs, computed): a refusal of bad input (HTTP 400) is recorded, not cached."""
        openai = require_openai()
        try:
            out = self._score(request, item)
        except openai.BadRequestError as err:
            if self.api == "chat" and self.supports["prefill"] is None and "continue_final_message" in _message(err):
                self._learned("prefill", False)
                return self._judge_one(request, item)
            return missing_outputs(f"item {item.get('id')!r}: the server refused it (HTTP 400: {_message(err)})",
                                   self.mode), False
        if self.api == "chat" and out.get("n_tokens") is None:
            out["n_tokens"] = None
        with self._lock:
            self.path_counts[out["score_path"]] = self.path_counts.get(out["score_path"], 0) + 1
        return out, True

    # -- judging ----------------------------------------------------------------------------------
    def _requests(self, items: Sequence[Mapping], indices: Sequence[int]):
        if self.api == "completions":
            return token_requests(self.tokenizer, self.prompt, items, indices, self.mode, self.max_length,
                                  self.truncation, self.max_new_tokens)
        return [TokenRequest(index=i, ids=[]) for i in indices], {}

    def judge(self, items: Sequence[Mapping]) -> List[Dict]:
        """Records in the order of ``items``; with a cache, finished items come from it and every
        judged item is appended as soon as its answer is in."""
        return judge_cached(items, lambda indices: self._judge_some(items, indices), prompt=self.prompt,
                            mode=self.mode, cache=self.cache, stats=self.stats, progress=self.progress,
                            desc=f"judging {self.model_name or 'the served model'}")

    def _judge_some(self, items: Sequence[Mapping], indices: List[int]) -> Iterator[Tuple[List[Tuple[int, Dict]], bool]]:
        openai = require_openai()
        self.connect()
        requests, missing = self._requests(items, indices)
        if missing:
            yield sorted(missing.items()), False
        if not requests:
            return
        # The first item alone: what the server supports is learned once, before requests run in parallel.
        first, rest = requests[0], requests[1:]
        try:
            out, computed = self._judge_one(first, items[first.index])
        except (openai.OpenAIError, MalformedResponse) as err:
            raise self._explained(err) from None
        if not computed and "logprobs" in (out.get("missing_reason") or ""):
            raise ServedModelError(f"the server at {self.base_url} refused the log-probabilities asked for: "
                                   f"{out['missing_reason']}", fix="lower --top_logprobs to what the server allows")
        yield [(first.index, out)], computed
        failure: Optional[Exception] = None
        done = 1
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="vat-hf-served")
        try:
            futures = {pool.submit(self._judge_one, r, items[r.index]): r for r in rest}
            for future in concurrent.futures.as_completed(futures):
                try:
                    out, computed = future.result()
                except concurrent.futures.CancelledError:
                    continue
                except Exception as err:  # the client's retries are spent: stop, keep what is done
                    if failure is None:
                        failure = err
                        for f in futures:
                            f.cancel()
                    continue
                done += 1
                yield [(futures[future].index, out)], computed
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failure is not None:
            explained = (self._explained(failure) if isinstance(failure, (openai.OpenAIError, MalformedResponse))
                         else failure)
            kept = "kept in the judgment cache" if self.cache is not None else "not kept (the judgment cache is off)"
            raise ServedModelError(f"{explained.message if isinstance(explained, VatHfError) else explained}; "
                                   f"{done} of {len(requests)} items were judged before it and are {kept}",
                                   fix=(getattr(explained, "fix", None) or "") + ("; " if getattr(explained, "fix", None)
                                                                                 else "") +
                                   "rerun the same command to judge the rest") from failure

    # -- what results files say -------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Identifies the served model for the judgment cache: the server's address and the model's
        name there (known without asking the server, so a fully cached run needs no server). Two
        servers never share judgments; a server restarted at the same address under the same
        name is taken to serve the same model."""
        from vat_hf.evaluation.cache import sha256_json

        return sha256_json({"kind": "served", "base_url": self.base_url, "model": self.model_name})[:32]

    def scoring_config(self) -> Dict[str, Any]:
        """Everything besides model, adapter and prompt that decides an item's outputs here."""
        from vat_hf.evaluation.cache import tokenizer_fingerprint

        config = {"backend": "openai", "api": self.api, "mode": self.mode, "options": list(OPTIONS),
                  "tokenizer": tokenizer_fingerprint(self.tokenizer) if self.tokenizer is not None else None,
                  "max_length": self.max_length, "truncation": self.truncation}
        if self.mode == MODE_GENERATE:
            config["max_new_tokens"] = self.max_new_tokens
        return config

    def info(self) -> Dict[str, Any]:
        return {"backend": "openai", "base_url": self.base_url, "model_name": self.model_name, "api": self.api,
                "server_model": self.server_model, "supports": dict(self.supports),
                "score_paths": dict(sorted(self.path_counts.items())),
                "dtype": None, "dtype_note": "chosen by the server; an OpenAI-compatible API does not report it"}

