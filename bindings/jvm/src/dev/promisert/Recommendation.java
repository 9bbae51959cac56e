package dev.promisert;

/** One recommended item: its dense id and its ranking key (see the Rust docs of the search). */
public final class Recommendation {
    public final int item;
    public final float score;

    Recommendation(int item, float score) {
        this.item = item;
        this.score = score;
    }

    @Override
    public String toString() {
        return item + " (" + score + ")";
    }
}
