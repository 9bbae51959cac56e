package dev.promisert;

/**
 * An error from the runtime: the stable status code of the C API (the same numbers as
 * {@code PROMISE_STATUS_*} in promise_rt.h and Rust's {@code ErrorCode}) and the
 * runtime's message, which names the wrong value and what was expected.
 */
public final class PromiseException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The stable codes, by number (never renumbered; new ones are appended). */
    public enum Code {
        OK, IO, MANIFEST, CATALOG, GRAPH, CHECKSUM, CONFIG, EMPTY_HISTORY, UNKNOWN_ITEM,
        CAPACITY, BACKEND_UNAVAILABLE, BACKEND, INVALID_ARGUMENT, PANIC, DEVICE_LOST, LIMITS,
        /** A code this binding does not know yet (a newer native library). */
        UNKNOWN;

        static Code of(int status) {
            Code[] all = values();
            return status >= 0 && status < all.length - 1 ? all[status] : UNKNOWN;
        }
    }

    private final int status;

    /** Called by the JNI shim with the C status and promise_last_error(). */
    PromiseException(int status, String message) {
        super(Code.of(status) + " (" + status + "): " + message);
        this.status = status;
    }

    /** The C status number. */
    public int status() {
        return status;
    }

    /** The status as a {@link Code}. */
    public Code code() {
        return Code.of(status);
    }
}
