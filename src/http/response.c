/* Response formatting: status line and headers, and the error envelope.
 * Pure functions over buffers, shared by the server and the unit tests. */
#include <string.h>
#include "cronium/http.h"

const char *crt_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
    }
}

void crt_http_format_head(crt_buf *o, const crt_resp_head *h)
{
    crt_buf_puts(o, "HTTP/1.1 ");
    crt_buf_put_u64(o, (uint64_t)h->status);
    crt_buf_putc(o, ' ');
    crt_buf_puts(o, crt_http_reason(h->status));
    if (h->date) {
        crt_buf_puts(o, "\r\nDate: ");
        crt_buf_puts(o, h->date);
    }
    if (h->content_type) {
        crt_buf_puts(o, "\r\nContent-Type: ");
        crt_buf_puts(o, h->content_type);
    }
    /* RFC 9110 §8.6: no Content-Length on 1xx and 204. */
    if (h->status >= 200 && h->status != 204) {
        crt_buf_puts(o, "\r\nContent-Length: ");
        crt_buf_put_u64(o, h->content_length);
    }
    if (h->request_id_len) {
        crt_buf_puts(o, "\r\nX-Request-Id: ");
        crt_buf_append(o, h->request_id, h->request_id_len);
    }
    if (!h->keep_alive)
        crt_buf_puts(o, "\r\nConnection: close");
    else if (h->http10)
        crt_buf_puts(o, "\r\nConnection: keep-alive");
    crt_buf_puts(o, "\r\n");
    if (h->extra_len)
        crt_buf_append(o, h->extra, h->extra_len);
    crt_buf_puts(o, "\r\n");
}

void crt_http_error_body(crt_buf *b, int status, const char *code, const char *message)
{
    const char *reason = crt_http_reason(status);
    crt_buf_puts(b, "{\"success\":false,\"error\":");
    crt_buf_json_str(b, reason, strlen(reason));
    crt_buf_puts(b, ",\"message\":");
    crt_buf_json_str(b, message, strlen(message));
    crt_buf_puts(b, ",\"code\":");
    crt_buf_json_str(b, code, strlen(code));
    crt_buf_putc(b, '}');
}
