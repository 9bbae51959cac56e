package dev.promisert;

/** The JNI shim (bindings/jvm/jni/promise_jni.c) over the C API. Handles are pointers. */
final class Native {
    static {
        load();
    }

    /**
     * The native libraries: a system copy first ({@code promise_jni} on
     * {@code java.library.path}, or the app's own libs, which link {@code libpromise_rt}),
     * else the copies the jar carries for its platform ({@code native/linux-x86_64},
     * {@code native/linux-aarch64} beside this class), extracted into a fresh private
     * temporary folder and loaded from there ({@code libpromise_jni} finds
     * {@code libpromise_rt} beside itself through its {@code $ORIGIN} rpath).
     */
    private static void load() {
        UnsatisfiedLinkError system;
        try {
            System.loadLibrary("promise_jni");
            return;
        } catch (UnsatisfiedLinkError e) {
            system = e;
        }
        String os = System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT);
        String arch = System.getProperty("os.arch", "");
        String platform = null;
        if (os.contains("linux")) {
            if (arch.equals("amd64") || arch.equals("x86_64")) {
                platform = "linux-x86_64";
            } else if (arch.equals("aarch64") || arch.equals("arm64")) {
                platform = "linux-aarch64";
            }
        }
        if (platform == null || Native.class.getResource("native/" + platform + "/libpromise_jni.so") == null) {
            UnsatisfiedLinkError e = new UnsatisfiedLinkError("promise-rt: no promise_jni on java.library.path ("
                    + system.getMessage() + ") and the jar carries no native library for " + os + "/" + arch);
            e.initCause(system);
            throw e;
        }
        try {
            java.nio.file.Path dir = java.nio.file.Files.createTempDirectory("promise-rt-");
            dir.toFile().deleteOnExit();
            java.nio.file.Path jni = null;
            for (String name : new String[] {"libpromise_rt.so", "libpromise_jni.so"}) {
                java.nio.file.Path to = dir.resolve(name);
                try (java.io.InputStream in = Native.class.getResourceAsStream("native/" + platform + "/" + name)) {
                    if (in == null) {
                        throw new UnsatisfiedLinkError("promise-rt: the jar lacks native/" + platform + "/" + name);
                    }
                    java.nio.file.Files.copy(in, to);
                }
                to.toFile().deleteOnExit();
                jni = to;
            }
            System.load(jni.toAbsolutePath().toString());
        } catch (java.io.IOException e) {
            UnsatisfiedLinkError u = new UnsatisfiedLinkError("promise-rt: cannot extract the native library: " + e);
            u.initCause(e);
            throw u;
        }
    }

    private Native() {}

    static native String version();

    static native long openPath(String path, int device, int flags);

    static native long openMemory(byte[] bundle, int device);

    static native long openFd(java.io.FileDescriptor fd, long offset, long length, int device,
            int flags);

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
