package dev.promisert;

import java.nio.charset.StandardCharsets;

/**
 * A loaded model. Thread-safe: share one across threads and give each thread its own
 * {@link PromiseSession}. Close it when done (sessions created from it stay usable: they
 * keep the native model alive).
 */
public final class PromiseModel implements AutoCloseable {
    public static final int DEVICE_CPU = 0;
    public static final int DEVICE_GPU = 1;
    public static final int DEVICE_AUTO = 2;
    /**
     * Open flag: the CPU engine reads the tables that grow with the catalog in place from the
     * memory map instead of a heap copy. The bundle's bytes must then stay unchanged for as
     * long as the model lives (an APK asset, an app's own read-only file).
     */
    public static final int TABLES_IN_PLACE = 1;

    private long handle;

    private PromiseModel(long handle) {
        this.handle = handle;
    }

    /** The native library's version. */
    public static String version() {
        return Native.version();
    }

    /** Open a bundle directory or a one-file .promise bundle at {@code path}. */
    public static PromiseModel open(String path, int device) {
        return open(path, device, 0);
    }

    /** {@link #open(String, int)} with flags (0 or {@link #TABLES_IN_PLACE}). */
    public static PromiseModel open(String path, int device, int flags) {
        return new PromiseModel(Native.openPath(path, device, flags));
    }

    /** Open a one-file .promise bundle from memory; the bytes are copied during the call. */
    public static PromiseModel openMemory(byte[] bundle, int device) {
        if (bundle == null) {
            throw new NullPointerException("bundle");
        }
        return new PromiseModel(Native.openMemory(bundle, device));
    }

    /**
     * Open a one-file .promise bundle stored at {@code offset..offset+length} of an open file:
     * on Android, an uncompressed APK asset
     * ({@code AssetManager.openFd(name)}: its getFileDescriptor(), getStartOffset(),
     * getLength()). The descriptor stays the caller's.
     */
    public static PromiseModel openFd(java.io.FileDescriptor fd, long offset, long length,
            int device) {
        return openFd(fd, offset, length, device, 0);
    }

    /**
     * {@link #openFd(java.io.FileDescriptor, long, long, int)} with flags (0 or
     * {@link #TABLES_IN_PLACE}: the mapped range is then read for the model's life).
     */
    public static PromiseModel openFd(java.io.FileDescriptor fd, long offset, long length,
            int device, int flags) {
        if (fd == null) {
            throw new NullPointerException("fd");
        }
        return new PromiseModel(Native.openFd(fd, offset, length, device, flags));
    }

    /** How many items the catalog holds (ids 0..numItems-1). */
    public synchronized int numItems() {
        return Native.numItems(live());
    }

    /**
     * The app's id of catalog item {@code item}, from the bundle's id table (ids.bin).
     * {@link PromiseException.Code#CONFIG} for a bundle without ids,
     * {@link PromiseException.Code#UNKNOWN_ITEM} for an index outside the catalog.
     */
    public synchronized String itemId(int item) {
        return new String(Native.itemId(live(), item), StandardCharsets.UTF_8);
    }

    /** A new session with its own buffers, for one thread at a time. */
    public synchronized PromiseSession newSession(SearchConfig cfg) {
        return new PromiseSession(this, Native.sessionNew(live(), cfg.beams, cfg.candidates,
                cfg.results, cfg.prm, cfg.mix), cfg.results);
    }

    private long live() {
        if (handle == 0) {
            throw new IllegalStateException("the model is closed");
        }
        return handle;
    }

    @Override
    public synchronized void close() {
        if (handle != 0) {
            Native.modelFree(handle);
            handle = 0;
        }
    }
}
