package dev.promisert;

/** The JNI shim (bindings/jvm/jni/promise_jni.c) over the C API. Handles are pointers. */
final class Native {
    static {
        // libpromise_jni links libpromise_rt; both on java.library.path (or the app's libs)
        System.loadLibrary("promise_jni");
    }

    private Native() {}

    static native String version();

    static native long openPath(String path, int device);

    static native long openMemory(byte[] bundle, int device);

    static native long openFd(java.io.FileDescriptor fd, long offset, long length, int device);

    static native int numItems(long model);

    static native void modelFree(long model);

    static native long sessionNew(long model, int beams, int candidates, int results, boolean prm,
            float mix);

    static native int recommend(long session, int[] history, int[] items, float[] scores);

    static native void setHistoryWindow(long session, int items);
    static native void warmup(long session);

    static native void sessionFree(long session);
}
