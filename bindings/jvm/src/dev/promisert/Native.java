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

    /** The id's UTF-8 bytes. */
    static native byte[] itemId(long model, int item);

    /**
     * {@code ids}: {@code count} UTF-8 ids, each followed by a NUL byte. Writes the feed to
     * items/scores and the count of unknown ids to unknown[0]; returns the feed's length.
     */
    static native int recommendIds(long session, byte[] ids, int count, int[] items,
            float[] scores, int[] unknown);

    static native void setHistoryWindow(long session, int items);
    static native void warmup(long session);

    static native void sessionFree(long session);
}
