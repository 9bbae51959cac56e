/* A personalised feed from C: load the shipped bundle, ask for the top 10, print them,
 * then walk through the error paths an app can hit, and open the same model as a one-file
 * bundle from memory and from a file descriptor range (as an Android app does with an APK
 * asset), with its catalog-sized tables copied or read in place. Exit status 0 when every
 * check holds. Build: see tests/c/run.sh.
 * Usage: feed [BUNDLE_DIR [BUNDLE.promise]] */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "promise_rt.h"

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* The feed of `model` for `history` (10 items) into `items`; 0 on success. */
static int feed_of(PromiseModel *model, const uint32_t *history, size_t n, uint32_t *items) {
    PromiseSession *s = NULL;
    PromiseSearchConfig cfg;
    promise_search_config_default(&cfg);
    cfg.beams = 8; cfg.candidates = 32; cfg.results = 10;
    if (promise_session_new(model, &cfg, &s) != PROMISE_STATUS_OK) return -1;
    PromiseRecommendation recs[10];
    size_t written = 0;
    PromiseStatus st = promise_recommend(s, history, n, recs, 10, &written);
    promise_session_free(s);
    if (st != PROMISE_STATUS_OK || written != 10) return -1;
    for (size_t i = 0; i < 10; i++) items[i] = recs[i].item;
    return 0;
}

/* The one-file bundle `path`: from memory (the buffer freed right after the call) and from
 * an fd range inside a larger file; both must give `want`. Then their error paths. */
static void one_file_bundle(const char *path, const uint32_t *history, size_t n, const uint32_t *want) {
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "open %s", path);
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len);
    CHECK(buf && fread(buf, 1, (size_t)len, f) == (size_t)len, "read %s", path);
    fclose(f);
    uint32_t got[10];

    PromiseModel *m = NULL;
    PromiseStatus st = promise_model_open_memory(buf, (size_t)len, PROMISE_DEVICE_CPU, &m);
    CHECK(st == PROMISE_STATUS_OK, "open_memory: %s", promise_last_error());
    st = promise_model_open_memory(buf, (size_t)len - 1, PROMISE_DEVICE_CPU, &m);
    CHECK(st == PROMISE_STATUS_MANIFEST, "truncated buffer -> %d", st);
    printf("truncated buffer  -> %s: %s\n", promise_status_text(st), promise_last_error());
    PromiseModel *m_null = NULL;
    st = promise_model_open_memory(NULL, 10, PROMISE_DEVICE_CPU, &m_null);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT && m_null == NULL, "NULL data -> %d", st);

    /* an "APK": 4097 bytes of something else, the bundle, 100 more bytes */
    FILE *apk = tmpfile();
    CHECK(apk != NULL, "tmpfile");
    if (apk) {
        unsigned char junk[4097];
        memset(junk, 0xA5, sizeof junk);
        fwrite(junk, 1, sizeof junk, apk);
        fwrite(buf, 1, (size_t)len, apk);
        fwrite(junk, 1, 100, apk);
        fflush(apk);
    }
    free(buf); /* the model opened from memory holds its own copy */
    CHECK(m && feed_of(m, history, n, got) == 0 && memcmp(got, want, sizeof got) == 0,
          "the in-memory bundle gives the directory's feed");
    promise_model_free(m);
    if (!apk) return;

    int fd = dup(fileno(apk));
    PromiseModel *mf = NULL;
    st = promise_model_open_fd(fd, 4097, (uint64_t)len, PROMISE_DEVICE_CPU, &mf);
    CHECK(st == PROMISE_STATUS_OK, "open_fd: %s", promise_last_error());
    close(fd); /* the model does not keep the descriptor */
    CHECK(mf && feed_of(mf, history, n, got) == 0 && memcmp(got, want, sizeof got) == 0,
          "the fd-range bundle gives the directory's feed");
    promise_model_free(mf);
    /* the same range with its catalog-sized tables read in place: the mapping is read for
     * the model's life (the descriptor is still not kept), and the feed is the same */
    fd = dup(fileno(apk));
    st = promise_model_open_fd_with(fd, 4097, (uint64_t)len, PROMISE_DEVICE_CPU, PROMISE_OPEN_TABLES_IN_PLACE, &mf);
    CHECK(st == PROMISE_STATUS_OK, "open_fd_with in place: %s", promise_last_error());
    close(fd);
    CHECK(mf && feed_of(mf, history, n, got) == 0 && memcmp(got, want, sizeof got) == 0,
          "the fd-range bundle read in place gives the directory's feed");
    promise_model_free(mf);
    PromiseModel *bad = NULL;
    st = promise_model_open_fd(fileno(apk), 4096, (uint64_t)len, PROMISE_DEVICE_CPU, &bad);
    CHECK(st == PROMISE_STATUS_MANIFEST && bad == NULL, "range off by one byte -> %d", st);
    st = promise_model_open_fd(fileno(apk), 4097, (uint64_t)len + 1000, PROMISE_DEVICE_CPU, &bad);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT, "range past the end -> %d", st);
    printf("range past the end -> %s: %s\n", promise_status_text(st), promise_last_error());
    st = promise_model_open_fd(-1, 0, 10, PROMISE_DEVICE_CPU, &bad);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT, "fd -1 -> %d", st);
    fclose(apk);
}

int main(int argc, char **argv) {
    const char *bundle = argc > 1 ? argv[1] : "models/ml1m";
    const char *one_file = argc > 2 ? argv[2] : NULL;
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
    /* one request's worth of work now, so that the user's first request is warm */
    st = promise_session_warmup(session);
    CHECK(st == PROMISE_STATUS_OK, "session_warmup: %s", promise_last_error());
    CHECK(promise_session_warmup(NULL) == PROMISE_STATUS_INVALID_ARGUMENT, "warmup(NULL)");

    uint32_t history[] = {12, 7, 99, 1024, 5, 318};
    PromiseRecommendation recs[10];
    size_t written = 0;
    st = promise_recommend(session, history, sizeof history / sizeof history[0], recs, 10, &written);
    CHECK(st == PROMISE_STATUS_OK && written == 10, "recommend: %s", promise_last_error());
    printf("feed for a user who saw 12, 7, 99, 1024, 5, 318:\n");
    for (size_t i = 0; i < written; i++) printf("  %2zu. item %4u  score %8.4f\n", i + 1, recs[i].item, recs[i].score);
    if (one_file) {
        uint32_t want[10];
        CHECK(feed_of(model, history, 6, want) == 0, "feed_of");
        one_file_bundle(one_file, history, 6, want);
        printf("%s: the same feed from memory and from an fd range\n", one_file);
    }

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
    /* a shorter history window: 0 is refused, 3 reads the last 3 items (all still excluded) */
    st = promise_session_set_history_window(session, 0);
    CHECK(st == PROMISE_STATUS_CONFIG, "history window 0 -> %d", st);
    printf("history window 0  -> %s: %s\n", promise_status_text(st), promise_last_error());
    CHECK(promise_session_set_history_window(NULL, 3) == PROMISE_STATUS_INVALID_ARGUMENT, "null session window");
    st = promise_session_set_history_window(session, 3);
    CHECK(st == PROMISE_STATUS_OK, "history window 3: %s", promise_last_error());
    st = promise_recommend(session, history, 6, recs, 10, &written);
    CHECK(st == PROMISE_STATUS_OK && written == 10, "recommend, window 3: %s", promise_last_error());
    for (size_t i = 0; i < written; i++)
        for (size_t j = 0; j < 6; j++)
            CHECK(recs[i].item != history[j], "window 3 recommended history item %u", history[j]);

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
    /* the directory with its tables read in place: the same feed; an unknown flag refused */
    st = promise_model_open_with(bundle, PROMISE_DEVICE_CPU, PROMISE_OPEN_TABLES_IN_PLACE, &m2);
    CHECK(st == PROMISE_STATUS_OK, "open_with in place: %s", promise_last_error());
    uint32_t in_place[10], copied[10];
    CHECK(m2 && feed_of(m2, history, 6, in_place) == 0 && feed_of(model, history, 6, copied) == 0
          && memcmp(in_place, copied, sizeof in_place) == 0, "the tables read in place give the same feed");
    promise_model_free(m2);
    m2 = NULL;
    st = promise_model_open_with(bundle, PROMISE_DEVICE_CPU, 2, &m2);
    CHECK(st == PROMISE_STATUS_INVALID_ARGUMENT && m2 == NULL, "unknown flag -> %d", st);
    printf("unknown open flag -> %s: %s\n", promise_status_text(st), promise_last_error());

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
