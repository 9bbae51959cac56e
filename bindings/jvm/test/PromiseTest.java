package dev.promisert;

import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The JVM binding end to end, on the desktop JVM (run by bindings/jvm/run.sh, which CI runs
 * through `cargo test`): open from a directory, a .promise file, memory and an fd range;
 * recommend; every error as a PromiseException with its stable code; close; concurrent
 * use from several threads. Exit status 0 when every check holds.
 * With a third argument, a copy of the tiny bundle whose ids.bin names item i "sku-%05d"
 * (the Rust test that runs this makes it), the id calls too.
 * Usage: PromiseTest BUNDLE_DIR BUNDLE.promise [IDS_BUNDLE_DIR]
 */
public final class PromiseTest {
    private static int failures = 0;

    private static void check(boolean ok, String what) {
        if (!ok) {
            failures++;
            System.err.println("FAILED: " + what);
        }
    }

    interface Action {
        void run() throws Exception;
    }

    /** `a` must throw a PromiseException with `want`. */
    private static void expect(PromiseException.Code want, String what, Action a) {
        try {
            a.run();
            check(false, what + ": no exception, expected " + want);
        } catch (PromiseException e) {
            check(e.code() == want, what + ": " + e.getMessage() + ", expected " + want);
            System.out.println(String.format("%-22s -> %s", what, e.getMessage()));
        } catch (Exception e) {
            check(false, what + ": " + e + ", expected " + want);
        }
    }

    private static int[][] histories(int items) {
        int[][] hs = new int[20][];
        for (int u = 0; u < hs.length; u++) {
            hs[u] = new int[3 + u * 5];
            for (int j = 0; j < hs[u].length; j++) {
                hs[u][j] = (u * 131 + j * 17) % items;
            }
        }
        return hs;
    }

    private static List<String> feeds(PromiseModel m, int[][] hs) {
        List<String> out = new ArrayList<>();
        try (PromiseSession s = m.newSession(SearchConfig.defaults())) {
            for (int[] h : hs) {
                out.add(Arrays.toString(s.recommend(h)));
            }
        }
        return out;
    }

    private static String sku(int i) {
        return String.format("sku-%05d", i);
    }

    /** The id calls on a bundle whose item i is "sku-%05d": the same feed by id as by index. */
    private static void idChecks(String dir) {
        try (PromiseModel m = PromiseModel.open(dir, PromiseModel.DEVICE_CPU);
                PromiseSession s = m.newSession(SearchConfig.defaults())) {
            check(m.itemId(7).equals(sku(7)), "itemId(7)");
            Recommendation[] byIndex = s.recommend(new int[] {3, 1, 4});
            IdFeed feed = s.recommendIds(new String[] {sku(3), "new-item", sku(1), sku(4), "\uD83D\uDE00"});
            check(feed.unknown == 2, "2 unknown ids, got " + feed.unknown);
            check(feed.recommendations.length == byIndex.length, "id feed length");
            for (int i = 0; i < byIndex.length && i < feed.recommendations.length; i++) {
                Recommendation r = feed.recommendations[i];
                check(r.item == byIndex[i].item && r.score == byIndex[i].score, "id feed = index feed at " + i);
                check(sku(r.item).equals(r.id), "id of item " + r.item + " is " + r.id);
            }
            System.out.println("id feed: " + Arrays.toString(feed.recommendations) + ", " + feed.unknown + " unknown");
            IdFeed none = s.recommendIds(new String[] {"nobody"});
            check(none.recommendations.length == 0 && none.unknown == 1, "only unknown ids: an empty feed");
            expect(PromiseException.Code.EMPTY_HISTORY, "empty id history", () -> s.recommendIds(new String[0]));
            expect(PromiseException.Code.INVALID_ARGUMENT, "control character id",
                () -> s.recommendIds(new String[] {sku(1), "a\u0007b"}));
            expect(PromiseException.Code.INVALID_ARGUMENT, "NUL in an id", () -> s.recommendIds(new String[] {"a\u0000b"}));
            // a lone surrogate is refused by position, never encoded as '?' (another catalog id)
            expect(PromiseException.Code.INVALID_ARGUMENT, "lone surrogate", () -> s.recommendIds(new String[] {sku(1), "a\uD800"}));
            expect(PromiseException.Code.INVALID_ARGUMENT, "lone low surrogate", () -> s.recommendIds(new String[] {"\uDC00x"}));
            expect(PromiseException.Code.UNKNOWN_ITEM, "itemId past the end", () -> m.itemId(m.numItems()));
            try {
                s.recommendIds(new String[] {sku(1), null});
                check(false, "a null id was accepted");
            } catch (NullPointerException e) {
                System.out.println(String.format("%-22s -> %s", "null id", e.getMessage()));
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String dir = args[0];
        String file = args[1];
        System.out.println("promise-rt " + PromiseModel.version());
        List<String> want;
        int items;
        try (PromiseModel m = PromiseModel.open(dir, PromiseModel.DEVICE_CPU)) {
            items = m.numItems();
            check(items > 0, "numItems");
            int[] history = {12, 7, 99, 1024, 5, 318};
            try (PromiseSession s = m.newSession(new SearchConfig(8, 32, 10, true, 0.5f))) {
                s.warmup();
                Recommendation[] recs = s.recommend(history);
                check(recs.length == 10, "10 recommendations");
                for (Recommendation r : recs) {
                    for (int h : history) {
                        check(r.item != h, "a seen item came back");
                    }
                }
                System.out.println("feed: " + Arrays.toString(recs));
                expect(PromiseException.Code.EMPTY_HISTORY, "empty history", () -> s.recommend(new int[0]));
                expect(PromiseException.Code.UNKNOWN_ITEM, "unknown item", () -> s.recommend(new int[] {1, 1 << 30}));
                expect(PromiseException.Code.UNKNOWN_ITEM, "negative id", () -> s.recommend(new int[] {-1}));
                expect(PromiseException.Code.CONFIG, "history window 0", () -> s.setHistoryWindow(0));
                try {
                    s.setHistoryWindow(-3);
                    check(false, "a negative history window was accepted");
                } catch (IllegalArgumentException e) {
                    System.out.println("negative history window -> " + e.getMessage());
                }
                s.setHistoryWindow(3);
                Recommendation[] windowed = s.recommend(history);
                check(windowed.length == 10, "10 recommendations with a window of 3");
                for (Recommendation r : windowed) {
                    for (int h : history) {
                        check(r.item != h, "a seen item came back with a window of 3");
                    }
                }
            }
            expect(PromiseException.Code.CONFIG, "beams 0", () -> m.newSession(new SearchConfig(0, 4, 2, true, 0.5f)));
            expect(PromiseException.Code.CONFIG, "mix 2", () -> m.newSession(new SearchConfig(4, 16, 10, true, 2f)));
            want = feeds(m, histories(items));
            expect(PromiseException.Code.CONFIG, "ids, bundle has none", () -> m.itemId(0));
            try (PromiseSession s = m.newSession(SearchConfig.defaults())) {
                expect(PromiseException.Code.CONFIG, "id feed, no ids", () -> s.recommendIds(new String[] {"1"}));
            }
        }
        if (args.length > 2) {
            idChecks(args[2]);
        } else {
            System.out.println("id checks skipped: no IDS_BUNDLE_DIR given");
        }

        // the same model as one file: by path, from memory, from an fd range inside an "APK"
        byte[] bytes = Files.readAllBytes(new File(file).toPath());
        try (PromiseModel m = PromiseModel.open(file, PromiseModel.DEVICE_CPU)) {
            check(feeds(m, histories(items)).equals(want), ".promise path gives the directory's feeds");
        }
        try (PromiseModel m = PromiseModel.openMemory(bytes, PromiseModel.DEVICE_CPU)) {
            check(feeds(m, histories(items)).equals(want), "memory gives the directory's feeds");
        }
        File apk = File.createTempFile("promise", ".apk");
        apk.deleteOnExit();
        try (FileOutputStream o = new FileOutputStream(apk)) {
            o.write(new byte[4097]);
            o.write(bytes);
            o.write(new byte[100]);
        }
        try (FileInputStream in = new FileInputStream(apk)) {
            try (PromiseModel m = PromiseModel.openFd(in.getFD(), 4097, bytes.length, PromiseModel.DEVICE_CPU)) {
                check(feeds(m, histories(items)).equals(want), "fd range gives the directory's feeds");
            }
            try (PromiseModel m = PromiseModel.openFd(in.getFD(), 4097, bytes.length, PromiseModel.DEVICE_CPU,
                    PromiseModel.TABLES_IN_PLACE)) {
                check(feeds(m, histories(items)).equals(want), "fd range read in place gives the directory's feeds");
            }
            expect(PromiseException.Code.INVALID_ARGUMENT, "fd range past the end",
                () -> PromiseModel.openFd(in.getFD(), 4097, bytes.length + 1000L, PromiseModel.DEVICE_CPU));
        }

        // open errors
        expect(PromiseException.Code.IO, "missing bundle", () -> PromiseModel.open("/no/such/bundle", PromiseModel.DEVICE_CPU));
        expect(PromiseException.Code.MANIFEST, "truncated memory",
            () -> PromiseModel.openMemory(Arrays.copyOf(bytes, bytes.length - 1), PromiseModel.DEVICE_CPU));
        expect(PromiseException.Code.INVALID_ARGUMENT, "device 7", () -> PromiseModel.open(dir, 7));
        expect(PromiseException.Code.INVALID_ARGUMENT, "open flag 2", () -> PromiseModel.open(dir, PromiseModel.DEVICE_CPU, 2));
        try (PromiseModel m = PromiseModel.open(dir, PromiseModel.DEVICE_CPU, PromiseModel.TABLES_IN_PLACE)) {
            check(feeds(m, histories(items)).equals(want), "the directory read in place gives its feeds");
        }

        // close: idempotent; a closed handle is an IllegalStateException, not a crash
        PromiseModel closed = PromiseModel.open(file, PromiseModel.DEVICE_CPU);
        PromiseSession survivor = closed.newSession(SearchConfig.defaults());
        closed.close();
        closed.close();
        check(survivor.recommend(new int[] {1, 2, 3}).length == 10, "a session outlives its model's close");
        survivor.close();
        survivor.close();
        try {
            survivor.recommend(new int[] {1});
            check(false, "recommend after close");
        } catch (IllegalStateException e) {
            System.out.println(String.format("%-22s -> %s", "closed session", e.getMessage()));
        }
        try {
            closed.numItems();
            check(false, "numItems after close");
        } catch (IllegalStateException e) {
            System.out.println(String.format("%-22s -> %s", "closed model", e.getMessage()));
        }

        // concurrency: 4 threads with a session each on one model; then 2 threads on ONE
        // session, where every call gives the right feed or "in use", never a wrong one
        try (PromiseModel m = PromiseModel.open(file, PromiseModel.DEVICE_CPU)) {
            int[][] hs = histories(items);
            List<Thread> threads = new ArrayList<>();
            AtomicInteger wrong = new AtomicInteger();
            for (int t = 0; t < 4; t++) {
                Thread th = new Thread(() -> {
                    for (int r = 0; r < 5; r++) {
                        if (!feeds(m, hs).equals(want)) {
                            wrong.incrementAndGet();
                        }
                    }
                });
                threads.add(th);
                th.start();
            }
            for (Thread th : threads) {
                th.join();
            }
            check(wrong.get() == 0, wrong.get() + " wrong feeds from 4 threads with a session each");
            AtomicInteger inUse = new AtomicInteger();
            AtomicInteger ok = new AtomicInteger();
            try (PromiseSession shared = m.newSession(SearchConfig.defaults())) {
                threads.clear();
                for (int t = 0; t < 2; t++) {
                    Thread th = new Thread(() -> {
                        for (int r = 0; r < 200; r++) {
                            int u = r % hs.length;
                            try {
                                String got = Arrays.toString(shared.recommend(hs[u]));
                                if (got.equals(want.get(u))) {
                                    ok.incrementAndGet();
                                } else {
                                    wrong.incrementAndGet();
                                }
                            } catch (PromiseException e) {
                                if (e.code() == PromiseException.Code.INVALID_ARGUMENT
                                        && e.getMessage().contains("in use")) {
                                    inUse.incrementAndGet();
                                } else {
                                    wrong.incrementAndGet();
                                }
                            }
                        }
                    });
                    threads.add(th);
                    th.start();
                }
                for (Thread th : threads) {
                    th.join();
                }
            }
            check(wrong.get() == 0, wrong.get() + " wrong answers from 2 threads on one session");
            check(ok.get() + inUse.get() == 400, "every shared-session call answered");
            System.out.println("one session, 2 threads: " + ok.get() + " feeds, " + inUse.get() + " 'in use'");
        }

        if (failures > 0) {
            System.err.println(failures + " check(s) failed");
            System.exit(1);
        }
        System.out.println("all JVM binding checks passed");
    }
}
