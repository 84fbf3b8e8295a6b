#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_request into tests/fuzz/corpus/request/.

One file per seed: a valid request for every endpoint of docs/api.md section 4
(with @TOKEN@ where the token goes; the target replaces it), plus pipelined
pairs, chunked bodies with trailers, HEAD, Expect: 100-continue, Upgrade,
HTTP/1.0 and a few refusals (wrong execution, expired token). Run it again
after adding an endpoint; the files are committed.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "request")
E = "/executions/dev-execution"
AUTH = "Authorization: Bearer @TOKEN@\r\n"


def req(method, path, body=None, headers="", auth=True, version="HTTP/1.1"):
    h = f"{method} {path} {version}\r\nHost: runtime-api:8081\r\n"
    if auth:
        h += AUTH
    h += headers
    if body is not None:
        b = body.encode()
        h += f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n"
        return (h + "\r\n").encode() + b
    return (h + "\r\n").encode()


def chunked(method, path, chunks, trailers="", headers=""):
    h = (f"{method} {path} HTTP/1.1\r\nHost: runtime-api:8081\r\n{AUTH}{headers}"
         "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    out = h.encode()
    for c in chunks:
        out += f"{len(c.encode()):x}\r\n".encode() + c.encode() + b"\r\n"
    return out + b"0\r\n" + trailers.encode() + b"\r\n"


SEEDS = {
    # operational endpoints
    "health_get": req("GET", "/health", auth=False),
    "health_head": req("HEAD", "/health", auth=False),
    "ready_get": req("GET", "/ready", auth=False),
    "metrics_get": req("GET", "/metrics", auth=False),
    # the execution API
    "input_get": req("GET", f"{E}/input"),
    "output_post": req("POST", f"{E}/output", '{"data":{"result":42,"ok":true}}'),
    "output_get": req("GET", f"{E}/output"),
    "context_get": req("GET", f"{E}/context"),
    "context_field": req("GET", f"{E}/context?field=metadata.input.tags.0"),
    "condition_post": req("POST", f"{E}/condition", '{"condition":true}'),
    "condition_get": req("GET", f"{E}/condition"),
    "var_get": req("GET", f"{E}/variables/counter"),
    "var_head": req("HEAD", f"{E}/variables/counter"),
    "var_put": req("PUT", f"{E}/variables/counter", '{"value":{"a":[1,2,3],"b":null}}'),
    "var_put_encoded": req("PUT", f"{E}/variables/a%2Fb%20c%C3%A9", '{"value":"x"}'),
    "var_delete": req("DELETE", f"{E}/variables/counter"),
    "var_increment": req("POST", f"{E}/variables/counter/increment", '{"by":2.5}'),
    "var_append": req("POST", f"{E}/variables/log/append", '{"value":"line","separator":"\\n"}'),
    "tool_execute": req("POST", "/tool-actions/execute",
                        '{"tool":"slack","action":"send","params":{"text":"hi"}}'),
    "tool_execute_config": req("POST", "/tool-actions/execute",
                               '{"tool":"email","action":"send","config":{"to":"a@b.c"}}'),
    "options_preflight": req("OPTIONS", f"{E}/variables/k", auth=False,
                             headers="Origin: https://ok.example\r\nAccess-Control-Request-Method: PUT\r\n"
                                     "Access-Control-Request-Headers: authorization\r\n"),
    "cors_get": req("GET", f"{E}/input", headers="Origin: http://localhost:3000\r\n"),
    # refusals
    "wrong_execution": req("GET", "/executions/dev-execution/input").replace(b"@TOKEN@", b"@OTHER@"),
    "other_path": req("GET", "/executions/other-execution/input").replace(b"@TOKEN@", b"@OTHER@"),
    "expired": req("GET", f"{E}/input").replace(b"@TOKEN@", b"@EXPIRED@"),
    "no_token": req("GET", f"{E}/input", auth=False),
    "bad_method": req("PATCH", f"{E}/input", auth=False),
    "not_found": req("GET", "/nope?x=1", auth=False),
    # pipelined pairs
    "pipe_put_get": req("PUT", f"{E}/variables/k", '{"value":1}') + req("GET", f"{E}/variables/k"),
    "pipe_incr_incr": req("POST", f"{E}/variables/n/increment", '{"by":1}') +
                      req("POST", f"{E}/variables/n/increment", "{}"),
    "pipe_head_bad": req("HEAD", "/health", auth=False) + b"BAD REQUEST\r\n\r\n",
    "pipe_head_get": req("HEAD", f"{E}/variables/k") + req("GET", "/health", auth=False),
    "pipe_output": req("POST", f"{E}/output", '{"data":[1,"two",3.0]}') + req("GET", f"{E}/output"),
    "pipe_condition": req("POST", f"{E}/condition", '{"condition":false}') + req("GET", f"{E}/condition"),
    "pipe_close": req("GET", "/health", auth=False, headers="Connection: close\r\n") +
                  req("GET", "/health", auth=False),
    # chunked bodies, with trailers
    "chunked_put": chunked("PUT", f"{E}/variables/c", ['{"val', 'ue":"chunked"}']),
    "chunked_trailer": chunked("POST", "/health", [], trailers="X-T: " + "t" * 300 + "\r\n"),
    "chunked_trailer_put": chunked("PUT", f"{E}/variables/t", ['{"value":2}'],
                                   trailers="X-Checksum: abc\r\nAuthorization: Bearer nope\r\n"),
    "chunked_ext": (f"POST {E}/output HTTP/1.1\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n"
                    "5;name=value\r\n{\"dat\r\n7\r\na\":true}\r\n0\r\n\r\n").encode(),
    # Expect: 100-continue
    "expect_continue": req("PUT", f"{E}/variables/e", '{"value":"e"}', headers="Expect: 100-continue\r\n"),
    # Upgrade requests are answered over HTTP/1.1
    "upgrade_h2c": req("GET", "/health", auth=False,
                       headers="Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                               "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n") +
                   req("GET", "/health", auth=False),
    "upgrade_ws": req("GET", f"{E}/input", headers="Connection: Upgrade\r\nUpgrade: websocket\r\n"
                                                   "Sec-WebSocket-Version: 13\r\n"
                                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
    # HTTP/1.0, with and without keep-alive
    "http10": req("GET", "/health", auth=False, version="HTTP/1.0"),
    "http10_keepalive": req("GET", f"{E}/input", version="HTTP/1.0", headers="Connection: keep-alive\r\n") +
                        req("GET", "/health", auth=False, version="HTTP/1.0"),
    # header details
    "request_id": req("GET", "/health", auth=False, headers="X-Request-Id: abc-123\r\n"),
    "bearer_case": req("GET", f"{E}/input", auth=False, headers="authorization: bearer @TOKEN@  \r\n"),
    "obs_fold": req("GET", "/health", auth=False, headers="X-A: one\r\n two\r\n"),
    "obs_fold_head": req("HEAD", "/health", auth=False, headers="X-A: one\r\n two\r\n"),
    "space_before_colon": req("GET", "/health", auth=False, headers="X-A : one\r\n"),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
