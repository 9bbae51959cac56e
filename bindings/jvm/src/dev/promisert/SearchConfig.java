package dev.promisert;

/**
 * The search's budget: K' beams, K+ candidates the PRM scores, N results, PRM on or off,
 * and the mix of the generator's log-prob into the PRM's key. Validated by the runtime
 * when a session is created ({@link PromiseException.Code#CONFIG}).
 */
public final class SearchConfig {
    public final int beams;
    public final int candidates;
    public final int results;
    public final boolean prm;
    public final float mix;

    public SearchConfig(int beams, int candidates, int results, boolean prm, float mix) {
        this.beams = beams;
        this.candidates = candidates;
        this.results = results;
        this.prm = prm;
        this.mix = mix;
    }

    /** The runtime's default: K'=16, K+=64, N=10, PRM with mix 0.25 ({@code promise_search_config_default}). */
    public static SearchConfig defaults() {
        return new SearchConfig(16, 64, 10, true, 0.25f);
    }
}
