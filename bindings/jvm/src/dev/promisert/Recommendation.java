package dev.promisert;

/**
 * One recommended item: its catalog index, the app's id for it ({@code null} from
 * {@link PromiseSession#recommend}, which speaks indices) and its ranking key (see the Rust
 * docs of the search).
 */
public final class Recommendation {
    public final int item;
    public final String id;
    public final float score;

    Recommendation(int item, String id, float score) {
        this.item = item;
        this.id = id;
        this.score = score;
    }

    @Override
    public String toString() {
        return (id == null ? Integer.toString(item) : id) + " (" + score + ")";
    }
}
