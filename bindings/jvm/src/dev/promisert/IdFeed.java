package dev.promisert;

/**
 * A feed for a history in the app's ids ({@link PromiseSession#recommendIds}): the
 * recommendations, each with its id, and how many history ids the catalog did not know
 * (skipped: a new item the model has never seen).
 */
public final class IdFeed {
    public final Recommendation[] recommendations;
    public final int unknown;

    IdFeed(Recommendation[] recommendations, int unknown) {
        this.recommendations = recommendations;
        this.unknown = unknown;
    }
}
