/* The JNI shim of dev.promisert.Native over the C API (src/ffi/promise_rt.h). Every
 * non-OK status becomes a dev.promisert.PromiseException carrying the status and
 * promise_last_error(); handles travel to Java as jlong. No state of its own. */
#include <jni.h>
#include <stdint.h>
#include <stdlib.h>
#include "promise_rt.h"

/* Throw PromiseException(status, promise_last_error()) and return 1 if st is not OK. */
static int fail(JNIEnv *env, PromiseStatus st) {
    if (st == PROMISE_STATUS_OK) return 0;
    jclass cls = (*env)->FindClass(env, "dev/promisert/PromiseException");
    if (!cls) return 1; /* NoClassDefFoundError pending */
    jmethodID ctor = (*env)->GetMethodID(env, cls, "<init>", "(ILjava/lang/String;)V");
    jstring msg = (*env)->NewStringUTF(env, promise_last_error());
    if (ctor && msg) {
        jobject e = (*env)->NewObject(env, cls, ctor, (jint)st, msg);
        if (e) (*env)->Throw(env, (jthrowable)e);
    }
    return 1;
}

/* A Java-side argument error (the C API is never called). */
static void throw_java(JNIEnv *env, const char *cls_name, const char *msg) {
    jclass cls = (*env)->FindClass(env, cls_name);
    if (cls) (*env)->ThrowNew(env, cls, msg);
}

/* A feed into the Java arrays (both at least `written` long, checked by the caller). */
static void write_feed(JNIEnv *env, const PromiseRecommendation *out, size_t written,
                       jintArray items, jfloatArray scores) {
    for (size_t i = 0; i < written; i++) {
        jint item = (jint)out[i].item;
        jfloat score = out[i].score;
        (*env)->SetIntArrayRegion(env, items, (jsize)i, 1, &item);
        (*env)->SetFloatArrayRegion(env, scores, (jsize)i, 1, &score);
    }
}

JNIEXPORT jstring JNICALL Java_dev_promisert_Native_version(JNIEnv *env, jclass c) {
    (void)c;
    return (*env)->NewStringUTF(env, promise_version());
}

JNIEXPORT jlong JNICALL Java_dev_promisert_Native_openPath(JNIEnv *env, jclass c, jstring path, jint device, jint flags) {
    (void)c;
    if (!path) { throw_java(env, "java/lang/NullPointerException", "path"); return 0; }
    const char *p = (*env)->GetStringUTFChars(env, path, NULL);
    if (!p) return 0; /* OutOfMemoryError pending */
    PromiseModel *m = NULL;
    PromiseStatus st = promise_model_open_with(p, device, (uint32_t)flags, &m);
    (*env)->ReleaseStringUTFChars(env, path, p);
    return fail(env, st) ? 0 : (jlong)(intptr_t)m;
}

JNIEXPORT jlong JNICALL Java_dev_promisert_Native_openMemory(JNIEnv *env, jclass c, jbyteArray bytes, jint device) {
    (void)c;
    jsize len = (*env)->GetArrayLength(env, bytes);
    jbyte *b = (*env)->GetByteArrayElements(env, bytes, NULL);
    if (!b) return 0;
    PromiseModel *m = NULL;
    /* the library copies the bytes during the call */
    PromiseStatus st = promise_model_open_memory((const uint8_t *)b, (size_t)len, device, &m);
    (*env)->ReleaseByteArrayElements(env, bytes, b, JNI_ABORT);
    return fail(env, st) ? 0 : (jlong)(intptr_t)m;
}

/* The int behind a java.io.FileDescriptor: "fd" on the desktop JVM, "descriptor" on Android. */
static int fd_of(JNIEnv *env, jobject fdo) {
    jclass cls = (*env)->GetObjectClass(env, fdo);
    jfieldID f = (*env)->GetFieldID(env, cls, "fd", "I");
    if (!f) {
        (*env)->ExceptionClear(env);
        f = (*env)->GetFieldID(env, cls, "descriptor", "I");
    }
    if (!f) {
        (*env)->ExceptionClear(env);
        return -1;
    }
    return (*env)->GetIntField(env, fdo, f);
}

JNIEXPORT jlong JNICALL Java_dev_promisert_Native_openFd(JNIEnv *env, jclass c, jobject fdo, jlong offset, jlong length, jint device, jint flags) {
    (void)c;
    if (offset < 0 || length < 0) {
        throw_java(env, "java/lang/IllegalArgumentException", "offset and length must not be negative");
        return 0;
    }
    PromiseModel *m = NULL;
    PromiseStatus st = promise_model_open_fd_with(fd_of(env, fdo), (uint64_t)offset, (uint64_t)length, device, (uint32_t)flags, &m);
    return fail(env, st) ? 0 : (jlong)(intptr_t)m;
}

JNIEXPORT jint JNICALL Java_dev_promisert_Native_numItems(JNIEnv *env, jclass c, jlong model) {
    (void)c;
    uint32_t n = 0;
    if (fail(env, promise_model_num_items((PromiseModel *)(intptr_t)model, &n))) return 0;
    return (jint)n;
}

JNIEXPORT void JNICALL Java_dev_promisert_Native_modelFree(JNIEnv *env, jclass c, jlong model) {
    (void)c;
    fail(env, promise_model_free((PromiseModel *)(intptr_t)model));
}

JNIEXPORT jlong JNICALL Java_dev_promisert_Native_sessionNew(JNIEnv *env, jclass c, jlong model,
        jint beams, jint candidates, jint results, jboolean prm, jfloat mix) {
    (void)c;
    if (beams < 0 || candidates < 0 || results < 0) {
        throw_java(env, "java/lang/IllegalArgumentException", "beams, candidates and results must not be negative");
        return 0;
    }
    PromiseSearchConfig cfg;
    promise_search_config_default(&cfg);
    cfg.beams = (uint32_t)beams;
    cfg.candidates = (uint32_t)candidates;
    cfg.results = (uint32_t)results;
    cfg.prm = prm ? 1 : 0;
    cfg.mix = mix;
    PromiseSession *s = NULL;
    PromiseStatus st = promise_session_new((PromiseModel *)(intptr_t)model, &cfg, &s);
    return fail(env, st) ? 0 : (jlong)(intptr_t)s;
}

JNIEXPORT jint JNICALL Java_dev_promisert_Native_recommend(JNIEnv *env, jclass c, jlong session,
        jintArray history, jintArray items, jfloatArray scores) {
    (void)c;
    jsize n = (*env)->GetArrayLength(env, history);
    jsize cap = (*env)->GetArrayLength(env, items);
    if ((*env)->GetArrayLength(env, scores) < cap) {
        throw_java(env, "java/lang/IllegalArgumentException", "scores is shorter than items");
        return 0;
    }
    /* ids are u32 in C: a negative int is passed on as a huge id, which the runtime
     * refuses as an unknown item */
    jint *h = (*env)->GetIntArrayElements(env, history, NULL);
    if (!h) return 0;
    PromiseRecommendation *out = malloc(sizeof *out * (size_t)(cap > 0 ? cap : 1));
    if (!out) {
        (*env)->ReleaseIntArrayElements(env, history, h, JNI_ABORT);
        throw_java(env, "java/lang/OutOfMemoryError", "recommendation buffer");
        return 0;
    }
    size_t written = 0;
    PromiseStatus st = promise_recommend((PromiseSession *)(intptr_t)session, (const uint32_t *)h,
                                         (size_t)n, out, (size_t)cap, &written);
    (*env)->ReleaseIntArrayElements(env, history, h, JNI_ABORT);
    if (!fail(env, st)) {
        write_feed(env, out, written, items, scores);
    }
    free(out);
    return st == PROMISE_STATUS_OK ? (jint)written : 0;
}

JNIEXPORT jbyteArray JNICALL Java_dev_promisert_Native_itemId(JNIEnv *env, jclass c, jlong model, jint item) {
    (void)c;
    const uint8_t *id = NULL;
    size_t len = 0;
    /* a negative int is passed on as a huge index, which the runtime refuses */
    if (fail(env, promise_model_item_id((PromiseModel *)(intptr_t)model, (uint32_t)item, &id, &len))) return NULL;
    jbyteArray out = (*env)->NewByteArray(env, (jsize)len);
    if (out) (*env)->SetByteArrayRegion(env, out, 0, (jsize)len, (const jbyte *)id);
    return out;
}

JNIEXPORT jint JNICALL Java_dev_promisert_Native_recommendIds(JNIEnv *env, jclass c, jlong session,
        jbyteArray ids, jint count, jintArray items, jfloatArray scores, jintArray unknown) {
    (void)c;
    jsize bytes = (*env)->GetArrayLength(env, ids);
    jsize cap = (*env)->GetArrayLength(env, items);
    if (count < 0 || (*env)->GetArrayLength(env, scores) < cap || (*env)->GetArrayLength(env, unknown) < 1) {
        throw_java(env, "java/lang/IllegalArgumentException", "count, scores or unknown do not fit");
        return 0;
    }
    jbyte *b = (*env)->GetByteArrayElements(env, ids, NULL);
    if (!b) return 0;
    const char **ptrs = malloc(sizeof *ptrs * (size_t)(count > 0 ? count : 1));
    PromiseRecommendation *out = malloc(sizeof *out * (size_t)(cap > 0 ? cap : 1));
    if (!ptrs || !out) {
        free(ptrs);
        free(out);
        (*env)->ReleaseByteArrayElements(env, ids, b, JNI_ABORT);
        throw_java(env, "java/lang/OutOfMemoryError", "id buffers");
        return 0;
    }
    /* the ids lie one after another, each NUL-terminated (PromiseSession.recommendIds) */
    jsize at = 0, k = 0;
    for (; k < count && at < bytes; k++) {
        ptrs[k] = (const char *)b + at;
        while (at < bytes && b[at] != 0) at++;
        at++;
    }
    size_t written = 0, unk = 0;
    PromiseStatus st = PROMISE_STATUS_INVALID_ARGUMENT;
    if (k == count && at <= bytes) {
        st = promise_recommend_ids((PromiseSession *)(intptr_t)session, ptrs, (size_t)count, out,
                                   (size_t)cap, &written, &unk);
    } else {
        throw_java(env, "java/lang/IllegalArgumentException", "ids holds fewer NUL-terminated ids than count");
    }
    if (k == count && at <= bytes && !fail(env, st)) {
        write_feed(env, out, written, items, scores);
        jint u = (jint)unk;
        (*env)->SetIntArrayRegion(env, unknown, 0, 1, &u);
    }
    (*env)->ReleaseByteArrayElements(env, ids, b, JNI_ABORT);
    free(ptrs);
    free(out);
    return st == PROMISE_STATUS_OK ? (jint)written : 0;
}

JNIEXPORT void JNICALL Java_dev_promisert_Native_setHistoryWindow(JNIEnv *env, jclass c, jlong session, jint items) {
    (void)c;
    if (items < 0) items = 0; /* PromiseSession refuses negative counts first */
    fail(env, promise_session_set_history_window((PromiseSession *)(intptr_t)session, (size_t)items));
}

JNIEXPORT void JNICALL Java_dev_promisert_Native_warmup(JNIEnv *env, jclass c, jlong session) {
    (void)c;
    fail(env, promise_session_warmup((PromiseSession *)(intptr_t)session));
}

JNIEXPORT void JNICALL Java_dev_promisert_Native_sessionFree(JNIEnv *env, jclass c, jlong session) {
    (void)c;
    fail(env, promise_session_free((PromiseSession *)(intptr_t)session));
}
