package dev.promisert;

/**
 * A session: the buffers of one request at a time. Use one per thread; a call while
 * another thread's call on the same session runs throws
 * {@link PromiseException.Code#INVALID_ARGUMENT} ("in use") instead of racing.
 */
public final class PromiseSession implements AutoCloseable {
    private volatile long handle;
    private final int results;

    PromiseSession(long handle, int results) {
        this.handle = handle;
        this.results = results;
    }

    /**
     * The feed for {@code history} (item ids, oldest first): up to N items, best first, none
     * of them in the history (min(N, unseen items): the runtime's full-feed guarantee).
     */
    public Recommendation[] recommend(int[] history) {
        long h = handle;
        if (h == 0) {
            throw new IllegalStateException("the session is closed");
        }
        if (history == null) {
            throw new NullPointerException("history");
        }
        int[] items = new int[results];
        float[] scores = new float[results];
        int n = Native.recommend(h, history, items, scores);
        Recommendation[] out = new Recommendation[n];
        for (int i = 0; i < n; i++) {
            out[i] = new Recommendation(items[i], scores[i]);
        }
        return out;
    }

    /**
     * Let the model read only the last {@code items} of each history (1 to the bundle's
     * window; {@link PromiseException.Code#CONFIG} otherwise): less work per request, at the
     * quality the model has for users with that many items. Every history item is still
     * excluded from its feed. A negative count is an {@link IllegalArgumentException}.
     */
    public void setHistoryWindow(int items) {
        if (items < 0) {
            throw new IllegalArgumentException("history window " + items + ", expected 1 or more");
        }
        long h = handle;
        if (h == 0) {
            throw new IllegalStateException("the session is closed");
        }
        Native.setHistoryWindow(h, items);
    }

    /**
     * Run one request's worth of work on a fixed history and discard its feed, so that the
     * first user request is warm (the mapped weights paged in, caches touched). Call it
     * once after {@link PromiseModel#session}, off the UI thread; it costs about one request.
     */
    public void warmup() {
        long h = handle;
        if (h == 0) {
            throw new IllegalStateException("the session is closed");
        }
        Native.warmup(h);
    }

    @Override
    public synchronized void close() {
        long h = handle;
        if (h != 0) {
            handle = 0;
            Native.sessionFree(h);
        }
    }
}
