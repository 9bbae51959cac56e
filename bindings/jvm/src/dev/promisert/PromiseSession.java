package dev.promisert;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/**
 * A session: the buffers of one request at a time. Use one per thread; a call while
 * another thread's call on the same session runs throws
 * {@link PromiseException.Code#INVALID_ARGUMENT} ("in use") instead of racing.
 */
public final class PromiseSession implements AutoCloseable {
    private volatile long handle;
    private final int results;
    private final PromiseModel model;

    PromiseSession(PromiseModel model, long handle, int results) {
        this.model = model;
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
            out[i] = new Recommendation(items[i], null, scores[i]);
        }
        return out;
    }

    /**
     * The feed for {@code history} in the app's ids (oldest first), each recommendation
     * with its id. Ids the catalog does not know are skipped and counted in
     * {@link IdFeed#unknown} (a history of unknown ids only gives an empty feed); a
     * malformed id (empty, over 256 bytes, control characters) is
     * {@link PromiseException.Code#INVALID_ARGUMENT} naming its position; a bundle without
     * ids {@link PromiseException.Code#CONFIG}. The ids are read back through the model,
     * which must still be open.
     */
    public IdFeed recommendIds(String[] history) {
        long h = handle;
        if (h == 0) {
            throw new IllegalStateException("the session is closed");
        }
        if (history == null) {
            throw new NullPointerException("history");
        }
        ByteArrayOutputStream ids = new ByteArrayOutputStream();
        for (int i = 0; i < history.length; i++) {
            if (history[i] == null) {
                throw new NullPointerException("history id " + i + " is null");
            }
            if (history[i].indexOf('\0') >= 0) {
                // the C call reads NUL-terminated ids: say so instead of cutting the id short
                throw new PromiseException(PromiseException.Code.INVALID_ARGUMENT.ordinal(),
                        "history id " + i + " holds a NUL character");
            }
            byte[] b = strictUtf8(history[i], i);
            ids.write(b, 0, b.length);
            ids.write(0);
        }
        int[] items = new int[results];
        float[] scores = new float[results];
        int[] unknown = new int[1];
        int n = Native.recommendIds(h, ids.toByteArray(), history.length, items, scores, unknown);
        Recommendation[] out = new Recommendation[n];
        for (int i = 0; i < n; i++) {
            out[i] = new Recommendation(items[i], model.itemId(items[i]), scores[i]);
        }
        return new IdFeed(out, unknown[0]);
    }

    /**
     * {@code id} as UTF-8, strictly: a malformed UTF-16 string (an unpaired surrogate) is
     * {@link PromiseException.Code#INVALID_ARGUMENT} naming the id and the position, never
     * replaced by {@code ?} (which could match another catalog id).
     */
    static byte[] strictUtf8(String id, int index) {
        for (int j = 0; j < id.length(); j++) {
            char c = id.charAt(j);
            if (Character.isHighSurrogate(c) && j + 1 < id.length() && Character.isLowSurrogate(id.charAt(j + 1))) {
                j++;
            } else if (Character.isSurrogate(c)) {
                throw new PromiseException(PromiseException.Code.INVALID_ARGUMENT.ordinal(),
                        "history id " + index + " is not valid UTF-16: an unpaired surrogate U+"
                                + Integer.toHexString(c).toUpperCase() + " at char " + j);
            }
        }
        return id.getBytes(StandardCharsets.UTF_8);
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
