"""A small OpenAI-compatible server that a test controls: real answers from a transformers model,
and faults on demand.

It answers ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions`` in the
shapes vLLM's server gives (docs/vllm.md: the legacy completions ``logprobs`` object with
``top_logprobs`` keyed by token text, or ``token_id:N`` with ``return_tokens_as_token_ids``;
chat's ``logprobs.content`` list; ``echo``; vLLM's ``logprob_token_ids``; 401 ``{"error":
"Unauthorized"}``; 404 naming the served model). The log-probabilities are the model's own
(full-vocabulary log-softmax of one forward pass per request), so a client's judgments can be
compared with the transformers evaluator's on the same model.

What it supports is switchable (``token_ids``, ``echo``, ``prefill``, ``logprobs``), and
``faults`` is a queue of what the next POSTs get instead of an answer: ``"500"``, ``"429"``
(with ``Retry-After: 1``), ``"timeout"`` (the answer comes after ``slow_s``), ``"malformed"``
(a 200 whose body is not JSON), ``"drop"`` (the connection closes halfway through the body).
``fail_from = n``: every POST from the n-th on gets a 500, until it is set back to None. It
listens on 127.0.0.1 only and stops with the ``with`` block.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

import torch


class FakeOpenAIServer:
    def __init__(self, model, tokenizer, name: str = "tiny", api_key: Optional[str] = None, token_ids: bool = True,
                 echo: bool = True, prefill: bool = True, logprobs: bool = True, max_logprobs: int = 20,
                 max_model_len: int = 4096, slow_s: float = 3.0):
        self.model, self.tokenizer, self.name, self.api_key = model, tokenizer, name, api_key
        self.token_ids, self.echo, self.prefill, self.logprobs = token_ids, echo, prefill, logprobs
        self.max_logprobs, self.max_model_len, self.slow_s = max_logprobs, max_model_len, slow_s
        self.faults: List[Optional[str]] = []
        self.fail_from: Optional[int] = None
        self.posts = 0
        self.answered: List[Dict[str, Any]] = []  # the bodies answered with a 200 and a full JSON answer
        self.authorizations: List[Optional[str]] = []
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                server._get(self)

            def do_POST(self):
                server._post(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- HTTP -----------------------------------------------------------------------------------------
    @staticmethod
    def _send(handler, status: int, body: Any, headers: Optional[Dict[str, str]] = None, raw: Optional[bytes] = None):
        data = raw if raw is not None else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def _authorized(self, handler) -> bool:
        auth = handler.headers.get("Authorization")
        with self._lock:
            self.authorizations.append(auth)
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            self._send(handler, 401, {"error": "Unauthorized"})
            return False
        return True

    def _get(self, handler) -> None:
        if not self._authorized(handler):
            return
        if handler.path.rstrip("/") != "/v1/models":
            return self._send(handler, 404, {"error": {"message": "Not Found", "code": 404}})
        self._send(handler, 200, {"object": "list", "data": [
            {"id": self.name, "object": "model", "created": int(time.time()), "owned_by": "fake", "root": "fake-root",
             "max_model_len": self.max_model_len}]})

    def _post(self, handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}")
        if not self._authorized(handler):
            return
        with self._lock:
            self.posts += 1
            number = self.posts
            fault = self.faults.pop(0) if self.faults else None
        if self.fail_from is not None and number >= self.fail_from:
            fault = "500"
        if fault == "500":
            return self._send(handler, 500, {"error": {"message": "Internal Server Error", "code": 500}})
        if fault == "429":
            return self._send(handler, 429, {"error": {"message": "Too Many Requests", "code": 429}},
                              headers={"Retry-After": "1"})
        if body.get("model") != self.name:
            return self._send(handler, 404, {"error": {
                "message": f"The model `{body.get('model')}` does not exist. Valid aliases: {self.name}.",
                "type": "NotFoundError", "param": "model", "code": 404}})
        try:
            if handler.path.rstrip("/") == "/v1/completions":
                answer = self._completion(body)
            elif handler.path.rstrip("/") == "/v1/chat/completions":
                answer = self._chat(body)
            else:
                return self._send(handler, 404, {"error": {"message": "Not Found", "code": 404}})
        except BadRequest as err:
            return self._send(handler, 400, {"error": {"message": str(err), "type": "BadRequestError", "code": 400}})
        data = json.dumps(answer).encode()
        if fault == "timeout":
            time.sleep(self.slow_s)
        if fault == "malformed":
            return self._send(handler, 200, None, raw=b'{"id": "cmpl-1", "choices": [{"text": "4", "logpr')
        if fault == "drop":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        with self._lock:
            self.answered.append(body)
        self._send(handler, 200, None, raw=data)

    # -- the model ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _logprobs(self, ids: List[int]) -> torch.Tensor:
        """Log-softmax at every position of ``ids`` (row t: the distribution of token t+1)."""
        with self._model_lock:
            return torch.log_softmax(self.model(torch.tensor([ids])).logits[0].double(), -1)

    def _greedy(self, ids: List[int], n: int) -> Tuple[List[int], torch.Tensor]:
        """Up to ``n`` greedy tokens after ``ids``, and the log-softmax rows of ``ids`` + them."""
        rows = self._logprobs(ids)
        out = [int(rows[-1].argmax())]
        while len(out) < n and out[-1] != self.tokenizer.eos_token_id:
            rows = self._logprobs(ids + out)
            out.append(int(rows[-1].argmax()))
        if len(rows) < len(ids) + len(out) - 1:
            rows = self._logprobs(ids + out)
        return out, rows

    def _key(self, token: int, as_ids: bool) -> str:
        return f"token_id:{token}" if as_ids else self.tokenizer.decode([token])

    def _check_logprobs(self, body, k) -> None:
        # Without token_ids support, logprob_token_ids is ignored (as by servers that do not know it).
        if k is not None and k > self.max_logprobs:
            raise BadRequest(f"Requested sample logprobs of {k}, which is greater than max allowed: {self.max_logprobs}")

    def _first_top(self, row: torch.Tensor, sampled: int, body, k: int, as_ids: bool) -> Dict[str, float]:
        wanted = body.get("logprob_token_ids") if self.token_ids else None
        tokens = list(wanted) if wanted else row.topk(k).indices.tolist() if k else []
        return {self._key(t, as_ids): float(row[t]) for t in [sampled, *tokens]}

    def _completion(self, body) -> Dict[str, Any]:
        ids = body["prompt"]
        if not isinstance(ids, list):
            ids = self.tokenizer.encode(ids, add_special_tokens=False)
        if len(ids) >= self.max_model_len:
            raise BadRequest(f"This model's maximum context length is {self.max_model_len} tokens. However, your "
                             f"prompt contains {len(ids)} input tokens")
        k = body.get("logprobs")
        echo = bool(body.get("echo"))
        if echo and not self.echo:
            raise BadRequest("echo is not supported")
        self._check_logprobs(body, k)
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        n = int(body.get("max_tokens") or 16)
        generated, rows = self._greedy(list(ids), n)
        choice: Dict[str, Any] = {"index": 0, "text": self.tokenizer.decode(generated), "finish_reason": "length",
                                  "logprobs": None}
        if k is not None and self.logprobs:
            tokens = [self._key(t, as_ids) for t in generated]
            token_logprobs = [float(rows[len(ids) - 1 + j][t]) for j, t in enumerate(generated)]
            tops = [self._first_top(rows[len(ids) - 1 + j], t, body, k, as_ids) for j, t in enumerate(generated)]
            if echo:
                prompt_lp = [None] + [float(rows[j - 1][ids[j]]) for j in range(1, len(ids))]
                tokens = [self._key(t, as_ids) for t in ids] + tokens
                token_logprobs = prompt_lp + token_logprobs
                tops = [None] + [{self._key(ids[j], as_ids): prompt_lp[j]} for j in range(1, len(ids))] + tops
            choice["logprobs"] = {"text_offset": list(range(len(tokens))), "token_logprobs": token_logprobs,
                                  "tokens": tokens, "top_logprobs": tops}
        return {"id": "cmpl-fake", "object": "text_completion", "model": self.name, "choices": [choice],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(generated),
                          "total_tokens": len(ids) + len(generated)}}

    def _chat(self, body) -> Dict[str, Any]:
        messages = body["messages"]
        if body.get("continue_final_message"):
            if not self.prefill:
                raise BadRequest("Unrecognized request argument supplied: continue_final_message")
            text = self.tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            text += messages[-1]["content"]
        else:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        k = body.get("top_logprobs") or 0
        self._check_logprobs(body, k)
        n = int(body.get("max_tokens") or 16)
        generated, rows = self._greedy(ids, n)
        choice: Dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": self.tokenizer.decode(generated)},
                                  "finish_reason": "length", "logprobs": None}
        if body.get("logprobs") and self.logprobs:
            content = []
            for j, t in enumerate(generated):
                top = self._first_top(rows[len(ids) - 1 + j], t, body, k, False)
                content.append({"token": self.tokenizer.decode([t]), "logprob": float(rows[len(ids) - 1 + j][t]),
                                "bytes": list(self.tokenizer.decode([t]).encode()),
                                "top_logprobs": [{"token": key, "logprob": v, "bytes": list(key.encode())}
                                                 for key, v in top.items()]})
            choice["logprobs"] = {"content": content}
        return {"id": "chatcmpl-fake", "object": "chat.completion", "model": self.name, "choices": [choice],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(generated),
                          "total_tokens": len(ids) + len(generated)}}


class BadRequest(ValueError):
    pass
