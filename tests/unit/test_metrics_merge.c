/* The merge of worker expositions (server.workers > 1): series summed by
 * name + labels whatever their order, per-worker gauges labelled, histograms
 * summed bucket by bucket, the carry keeping only counters and histograms;
 * and the shared segment end to end within one process (two slots). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "cronium/metrics_shared.h"

static const char w0[] =
    "# HELP cronium_runtime_http_requests_total HTTP requests by route, method and status.\n"
    "# TYPE cronium_runtime_http_requests_total counter\n"
    "cronium_runtime_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 100\n"
    "cronium_runtime_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"200\"} 2\n"
    "# HELP cronium_runtime_http_request_duration_seconds Time from first byte to answer written.\n"
    "# TYPE cronium_runtime_http_request_duration_seconds histogram\n"
    "cronium_runtime_http_request_duration_seconds_bucket{le=\"0.001\"} 90\n"
    "cronium_runtime_http_request_duration_seconds_bucket{le=\"+Inf\"} 102\n"
    "cronium_runtime_http_request_duration_seconds_sum 0.250000000\n"
    "cronium_runtime_http_request_duration_seconds_count 102\n"
    "# HELP cronium_runtime_open_connections Open client connections.\n"
    "# TYPE cronium_runtime_open_connections gauge\n"
    "cronium_runtime_open_connections 3\n"
    "# HELP cronium_runtime_valkey_up 1 when the Valkey connection is ready.\n"
    "# TYPE cronium_runtime_valkey_up gauge\n"
    "cronium_runtime_valkey_up 1\n"
    "# HELP cronium_runtime_build_info Build information.\n"
    "# TYPE cronium_runtime_build_info gauge\n"
    "cronium_runtime_build_info{version=\"0.1.0\",libuv=\"1.44.2\"} 1\n";

/* Worker 1: the same families in another order, a series worker 0 lacks
 * (backend by op/status) and one worker 0 has that it lacks. */
static const char w1[] =
    "# HELP cronium_runtime_backend_requests_total Backend requests.\n"
    "# TYPE cronium_runtime_backend_requests_total counter\n"
    "cronium_runtime_backend_requests_total{op=\"get\",status=\"200\"} 7\n"
    "# HELP cronium_runtime_http_requests_total HTTP requests by route, method and status.\n"
    "# TYPE cronium_runtime_http_requests_total counter\n"
    "cronium_runtime_http_requests_total{route=\"/ready\",method=\"GET\",status=\"503\"} 1\n"
    "cronium_runtime_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 200\n"
    "# HELP cronium_runtime_valkey_up 1 when the Valkey connection is ready.\n"
    "# TYPE cronium_runtime_valkey_up gauge\n"
    "cronium_runtime_valkey_up 0\n"
    "# HELP cronium_runtime_open_connections Open client connections.\n"
    "# TYPE cronium_runtime_open_connections gauge\n"
    "cronium_runtime_open_connections 4\n"
    "# HELP cronium_runtime_http_request_duration_seconds Time from first byte to answer written.\n"
    "# TYPE cronium_runtime_http_request_duration_seconds histogram\n"
    "cronium_runtime_http_request_duration_seconds_bucket{le=\"0.001\"} 200\n"
    "cronium_runtime_http_request_duration_seconds_bucket{le=\"+Inf\"} 201\n"
    "cronium_runtime_http_request_duration_seconds_sum 0.5\n"
    "cronium_runtime_http_request_duration_seconds_count 201\n"
    "# HELP cronium_runtime_build_info Build information.\n"
    "# TYPE cronium_runtime_build_info gauge\n"
    "cronium_runtime_build_info{version=\"0.1.0\",libuv=\"1.44.2\"} 1\n";

static const char merged[] =
    "# HELP cronium_runtime_http_requests_total HTTP requests by route, method and status.\n"
    "# TYPE cronium_runtime_http_requests_total counter\n"
    "cronium_runtime_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 300\n"
    "cronium_runtime_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"200\"} 2\n"
    "cronium_runtime_http_requests_total{route=\"/ready\",method=\"GET\",status=\"503\"} 1\n"
    "# HELP cronium_runtime_http_request_duration_seconds Time from first byte to answer written.\n"
    "# TYPE cronium_runtime_http_request_duration_seconds histogram\n"
    "cronium_runtime_http_request_duration_seconds_bucket{le=\"0.001\"} 290\n"
    "cronium_runtime_http_request_duration_seconds_bucket{le=\"+Inf\"} 303\n"
    "cronium_runtime_http_request_duration_seconds_sum 0.75\n"
    "cronium_runtime_http_request_duration_seconds_count 303\n"
    "# HELP cronium_runtime_open_connections Open client connections.\n"
    "# TYPE cronium_runtime_open_connections gauge\n"
    "cronium_runtime_open_connections 7\n"
    "# HELP cronium_runtime_valkey_up 1 when the Valkey connection is ready.\n"
    "# TYPE cronium_runtime_valkey_up gauge\n"
    "cronium_runtime_valkey_up{worker=\"0\"} 1\n"
    "cronium_runtime_valkey_up{worker=\"1\"} 0\n"
    "# HELP cronium_runtime_build_info Build information.\n"
    "# TYPE cronium_runtime_build_info gauge\n"
    "cronium_runtime_build_info{version=\"0.1.0\",libuv=\"1.44.2\"} 1\n"
    "# HELP cronium_runtime_backend_requests_total Backend requests.\n"
    "# TYPE cronium_runtime_backend_requests_total counter\n"
    "cronium_runtime_backend_requests_total{op=\"get\",status=\"200\"} 7\n";

static void merge_two(void **state)
{
    (void)state;
    crt_span t[2] = {{w0, sizeof w0 - 1}, {w1, sizeof w1 - 1}};
    crt_buf out;
    crt_buf_init(&out);
    crt_metrics_merge(t, 2, false, &out);
    assert_string_equal(crt_buf_cstr(&out), merged);
    crt_buf_fini(&out);
}

static void merge_one_is_identity_of_values(void **state)
{
    (void)state;
    crt_span t[1] = {{w1, sizeof w1 - 1}};
    crt_buf out;
    crt_buf_init(&out);
    crt_metrics_merge(t, 1, false, &out);
    const char *s = crt_buf_cstr(&out);
    assert_non_null(strstr(s, "cronium_runtime_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 200\n"));
    assert_non_null(strstr(s, "cronium_runtime_http_request_duration_seconds_sum 0.5\n"));
    assert_non_null(strstr(s, "cronium_runtime_valkey_up{worker=\"0\"} 0\n"));
    crt_buf_fini(&out);
}

static void carry_keeps_counters_and_histograms(void **state)
{
    (void)state;
    crt_span t[1] = {{w0, sizeof w0 - 1}};
    crt_buf out;
    crt_buf_init(&out);
    crt_metrics_merge(t, 1, true, &out);
    const char *s = crt_buf_cstr(&out);
    assert_non_null(strstr(s, "status=\"200\"} 100\n"));
    assert_non_null(strstr(s, "cronium_runtime_http_request_duration_seconds_count 102\n"));
    assert_null(strstr(s, "open_connections"));
    assert_null(strstr(s, "valkey_up"));
    assert_null(strstr(s, "build_info"));
    crt_buf_fini(&out);
}

static void hostile_text_is_skipped(void **state)
{
    (void)state;
    static const char bad[] = "no_value_here\n{}\n# TYPE\nx{a=\"1\"} notanumber\nok 5\n\n#\nok 1";
    crt_span t[2] = {{bad, sizeof bad - 1}, {"", 0}};
    crt_buf out;
    crt_buf_init(&out);
    crt_metrics_merge(t, 2, false, &out);
    assert_string_equal(crt_buf_cstr(&out), "ok 6\n");
    crt_buf_fini(&out);
}

/* Two slots of a real segment in one process: worker 0 publishes its
 * registry, worker 1's slot is written through a second mapping. */
static void segment_two_slots(void **state)
{
    (void)state;
    int fd = crt_mshared_create(2);
    assert_true(fd >= 0);
    assert_null(crt_mshared_map(fd, 3, 0));         /* wrong size: refused */
    crt_mshared *sup = crt_mshared_map(fd, 2, -1);
    crt_mshared *a = crt_mshared_map(fd, 2, 0);
    crt_mshared *b = crt_mshared_map(fd, 2, 1);
    assert_non_null(sup);
    assert_non_null(a);
    assert_non_null(b);
    crt_mshared_slot_spawned(sup, 0, 100);
    crt_mshared_slot_spawned(sup, 1, 101);
    uv_loop_t loop;
    uv_loop_init(&loop);
    crt_metrics *ma = crt_metrics_new(), *mb = crt_metrics_new();
    bool stop_a = false, stop_b = false;
    *crt_metrics_counter(ma, "t_total", "T.", "k=\"x\"") = 5;
    *crt_metrics_counter(mb, "t_total", "T.", "k=\"x\"") = 6;
    *crt_metrics_counter(mb, "t_total", "T.", "k=\"y\"") = 1;
    assert_int_equal(crt_mshared_start(a, &loop, ma, &stop_a), 0);
    assert_int_equal(crt_mshared_start(b, &loop, mb, &stop_b), 0);
    unsigned total;
    assert_int_equal(crt_mshared_ready(sup, &total), 2);
    assert_int_equal(total, 2);
    crt_buf out;
    crt_buf_init(&out);
    crt_metrics_render(ma, &out);                   /* hooked: the sum */
    const char *s = crt_buf_cstr(&out);
    assert_non_null(strstr(s, "t_total{k=\"x\"} 11\n"));
    assert_non_null(strstr(s, "t_total{k=\"y\"} 1\n"));
    assert_non_null(strstr(s, "cronium_runtime_workers 2\n"));
    assert_non_null(strstr(s, "cronium_runtime_worker_up{worker=\"1\"} 1\n"));

    /* Worker 1 dies and a new one takes its slot: its counters start at 0,
     * the sum carries on from the old ones. */
    assert_true(crt_mshared_slot_exited(sup, 1));
    assert_int_equal(crt_mshared_ready(sup, &total), 1);
    crt_mshared_stop(b);
    crt_mshared_free(b);
    crt_metrics_free(mb);
    crt_mshared *b2 = crt_mshared_map(fd, 2, 1);
    crt_metrics *mb2 = crt_metrics_new();
    *crt_metrics_counter(mb2, "t_total", "T.", "k=\"x\"") = 2;
    crt_mshared_slot_spawned(sup, 1, 102);
    assert_int_equal(crt_mshared_start(b2, &loop, mb2, &stop_b), 0);
    crt_buf_reset(&out);
    crt_metrics_render(ma, &out);
    s = crt_buf_cstr(&out);
    assert_non_null(strstr(s, "t_total{k=\"x\"} 13\n"));
    assert_non_null(strstr(s, "t_total{k=\"y\"} 1\n"));

    stop_a = true;                                  /* draining: not ready any more */
    crt_mshared_publish(a);
    assert_int_equal(crt_mshared_ready(sup, &total), 1);
    crt_mshared_stop(a);
    crt_mshared_stop(b2);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    crt_buf_fini(&out);
    crt_mshared_free(a);
    crt_mshared_free(b2);
    crt_mshared_free(sup);
    crt_metrics_free(ma);
    crt_metrics_free(mb2);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(merge_two),
        cmocka_unit_test(merge_one_is_identity_of_values),
        cmocka_unit_test(carry_keeps_counters_and_histograms),
        cmocka_unit_test(hostile_text_is_skipped),
        cmocka_unit_test(segment_two_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
