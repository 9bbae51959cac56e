/* A personalised feed from C: load the shipped bundle, ask for the top 10, print them,
 * then walk through the error paths an app can hit. Exit status 0 when every check
 * holds. Build: see tests/c/run.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "promise_rt.h"

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

int main(int argc, char **argv) {
    const char *bundle = argc > 1 ? argv[1] : "models/ml1m";
    printf("promise-rt %s\n", promise_version());

    PromiseModel *model = NULL;
    PromiseStatus st = promise_model_open(bundle, PROMISE_DEVICE_CPU, &model);
    if (st != PROMISE_STATUS_OK) {
        fprintf(stderr, "cannot open %s: %s: %s\n", bundle, promise_status_text(st), promise_last_error());
        return 1;
    }
    uint32_t n_items = 0;
    CHECK(promise_model_num_items(model, &n_items) == PROMISE_STATUS_OK && n_items > 0, "num_items");

    PromiseSearchConfig cfg;
    promise_search_config_default(&cfg);
    cfg.beams = 8; cfg.candidates = 32; cfg.results = 10;
    PromiseSession *session = NULL;
    st = promise_session_new(model, &cfg, &session);
    CHECK(st == PROMISE_STATUS_OK, "session_new: %s", promise_last_error());

    uint32_t history[] = {12, 7, 99, 1024, 5, 318};
    PromiseRecommendation recs[10];
    size_t written = 0;
    st = promise_recommend(session, history, sizeof history / sizeof history[0], recs, 10, &written);
    CHECK(st == PROMISE_STATUS_OK && written == 10, "recommend: %s", promise_last_error());
    printf("feed for a user who saw 12, 7, 99, 1024, 5, 318:\n");
    for (size_t i = 0; i < written; i++) printf("  %2zu. item %4u  score %8.4f\n", i + 1, recs[i].item, recs[i].score);

    /* error paths: each returns its status, writes nothing, leaves a message */
    size_t untouched = 12345;
    st = promise_recommend(session, history, 0, recs, 10, &untouched);
    CHECK(st == PROMISE_STATUS_EMPTY_HISTORY && untouched == 12345, "empty history -> %d", st);
    printf("empty history     -> %s: %s\n", promise_status_text(st), promise_last_error());
    uint32_t bad[] = {1, n_items + 5};
    st = promise_recommend(session, bad, 2, recs, 10, &untouched);
    CHECK(st == PROMISE_STATUS_UNKNOWN_ITEM && untouched == 12345, "unknown item -> %d", st);
    printf("unknown item      -> %s: %s\n", promise_status_text(st), promise_last_error());
    st = promise_recommend(session, history, 6, recs, 3, &untouched);
    CHECK(st == PROMISE_STATUS_CAPACITY, "small buffer -> %d", st);
    printf("small out buffer  -> %s: %s\n", promise_status_text(st), promise_last_error());
    st = promise_recommend(session, NULL, 6, recs, 10, &untouched);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT, "null history -> %d", st);
    st = promise_recommend(NULL, history, 6, recs, 10, &untouched);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT, "null session -> %d", st);
    printf("null pointers     -> %s: %s\n", promise_status_text(st), promise_last_error());

    PromiseSearchConfig bad_cfg = cfg;
    bad_cfg.beams = 0;
    PromiseSession *s2 = NULL;
    st = promise_session_new(model, &bad_cfg, &s2);
    CHECK(st == PROMISE_STATUS_CONFIG && s2 == NULL, "beams 0 -> %d", st);
    printf("beams = 0         -> %s: %s\n", promise_status_text(st), promise_last_error());
    bad_cfg = cfg; bad_cfg.results = 100;
    st = promise_session_new(model, &bad_cfg, &s2);
    CHECK(st == PROMISE_STATUS_CONFIG, "N > K+ -> %d", st);

    PromiseModel *m2 = NULL;
    st = promise_model_open("/no/such/bundle", PROMISE_DEVICE_CPU, &m2);
    CHECK(st == PROMISE_STATUS_IO && m2 == NULL, "missing bundle -> %d", st);
    printf("missing bundle    -> %s: %s\n", promise_status_text(st), promise_last_error());
    st = promise_model_open("\xff\xfe", PROMISE_DEVICE_CPU, &m2);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT, "bad utf-8 -> %d", st);
    printf("bad UTF-8 path    -> %s: %s\n", promise_status_text(st), promise_last_error());
    st = promise_model_open(bundle, 7, &m2);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT, "bad device -> %d", st);
    st = promise_model_open(bundle, PROMISE_DEVICE_CPU, NULL);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT, "null out -> %d", st);

    /* free: NULL is a no-op, double free is reported, not a crash */
    CHECK(promise_session_free(NULL) == PROMISE_STATUS_OK, "free(NULL)");
    CHECK(promise_model_free(NULL) == PROMISE_STATUS_OK, "free(NULL)");
    /* the session keeps the model alive after the model handle is freed */
    CHECK(promise_model_free(model) == PROMISE_STATUS_OK, "model_free");
    st = promise_recommend(session, history, 6, recs, 10, &written);
    CHECK(st == PROMISE_STATUS_OK && written == 10, "session after model_free: %s", promise_last_error());
    CHECK(promise_session_free(session) == PROMISE_STATUS_OK, "session_free");
    st = promise_session_free(session);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT, "double free -> %d", st);
    printf("double free       -> %s: %s\n", promise_status_text(st), promise_last_error());
    st = promise_model_free(model);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT, "double model free -> %d", st);

    if (failures) { fprintf(stderr, "%d check(s) failed\n", failures); return 1; }
    printf("all C API checks passed\n");
    return 0;
}
