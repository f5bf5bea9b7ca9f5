import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.deidentifier.arx.*;
import org.deidentifier.arx.AttributeType.Hierarchy;
import org.deidentifier.arx.criteria.*;

/**
 * A long-lived ARX 3.9.2 process for tests/benchmarks/bench_deid_adult.py, so that the benchmark can
 * interleave single ARX runs with its own in one session (one JVM, warmed up like the Python side).
 * Launched in source-file mode (no compiler step; the JRE's jdk.compiler module is enough):
 *
 *   java -cp '../shared/benchmarks/arx/lib/*' tests/benchmarks/arx/ArxServe.java
 *
 * Commands on stdin, one answer line each on stdout (always "ok ..." or "error ..."):
 *   load DIR CSV      read DIR/CSV (';'-separated) with the 8 Adult QIs and DIR's hierarchies
 *   run CONFIG        anonymize once; "ok ms=<anonymize()> ms_out=<+getOutput()> levels=a,b,..|none
 *                     supp=<suppressed rows> score=<ARX loss> lattice=<nodes materialized>"
 *   score CONFIG a,b  evaluate exactly the node a,b,.. (min = max generalization); "ok anonymous=..
 *                     supp=.. score=.." — ARX's verdict and loss for the other tool's solution
 * The quality model is ARX's default (Metric.createLossMetric()), as in ../shared/benchmarks/arx.
 */
public class ArxServe {
    static final String[] QIS = {"sex", "age", "race", "marital-status", "education", "native-country",
                                 "workclass", "salary-class"};
    static final String SENS = "occupation";
    static Data data;
    static Hierarchy occupation;

    static Hierarchy hierarchy(String dir, String a) throws Exception {
        return Hierarchy.create(dir + "/adult_hierarchy_" + a + ".csv", StandardCharsets.UTF_8, ';');
    }

    static ARXConfiguration config(String name) {
        ARXConfiguration c = ARXConfiguration.create();
        double limit = 0d;
        switch (name) {
            case "k5_0": c.addPrivacyModel(new KAnonymity(5)); break;
            case "k5_5": c.addPrivacyModel(new KAnonymity(5)); limit = 0.05d; break;
            case "l43": c.addPrivacyModel(new RecursiveCLDiversity(SENS, 4d, 3)); break;
            case "ld3": c.addPrivacyModel(new DistinctLDiversity(SENS, 3)); break;
            case "le3": c.addPrivacyModel(new EntropyLDiversity(SENS, 3)); break;
            case "t02_eq": c.addPrivacyModel(new EqualDistanceTCloseness(SENS, 0.2d)); break;
            case "t02_hd": c.addPrivacyModel(new HierarchicalDistanceTCloseness(SENS, 0.2d, occupation)); break;
            default: throw new IllegalArgumentException("unknown configuration " + name);
        }
        c.setSuppressionLimit(limit);
        return c;
    }

    static void prepare(String name) {
        boolean sensitive = !name.startsWith("k");
        data.getDefinition().setAttributeType(SENS, sensitive ? AttributeType.SENSITIVE_ATTRIBUTE
                                                              : AttributeType.INSENSITIVE_ATTRIBUTE);
        data.getHandle().release();
    }

    static int suppressed(DataHandle out) {
        int s = 0;
        for (int row = 0; row < out.getNumRows(); row++) if (out.isOutlier(row)) s++;
        return s;
    }

    static String run(String name) throws Exception {
        prepare(name);
        ARXConfiguration c = config(name);
        ARXAnonymizer anonymizer = new ARXAnonymizer();
        long t0 = System.nanoTime();
        ARXResult r = anonymizer.anonymize(data, c);
        long t1 = System.nanoTime();
        DataHandle out = r.getOutput(false);
        long t2 = System.nanoTime();
        ARXLattice.ARXNode node = r.getGlobalOptimum();
        String levels = "none", supp = "0", score = "nan";
        if (node != null) {
            int[] lv = new int[QIS.length];
            for (int j = 0; j < QIS.length; j++) lv[j] = node.getGeneralization(QIS[j]);
            levels = Arrays.toString(lv).replaceAll("[\\[\\] ]", "");
            supp = String.valueOf(suppressed(out));
            score = String.valueOf(node.getHighestScore());
        }
        return String.format("ok ms=%.3f ms_out=%.3f levels=%s supp=%s score=%s lattice=%d",
                             (t1 - t0) / 1e6, (t2 - t0) / 1e6, levels, supp, score, r.getLattice().getSize());
    }

    static String score(String name, String levels) throws Exception {
        String[] parts = levels.split(",");
        DataDefinition def = data.getDefinition();
        for (int j = 0; j < QIS.length; j++) {
            int lv = Integer.parseInt(parts[j].trim());
            def.setMinimumGeneralization(QIS[j], lv);
            def.setMaximumGeneralization(QIS[j], lv);
        }
        try {
            prepare(name);
            ARXResult r = new ARXAnonymizer().anonymize(data, config(name));
            ARXLattice.ARXNode node = r.getGlobalOptimum();
            if (node == null) return "ok anonymous=false supp=0 score=nan";
            return String.format("ok anonymous=true supp=%d score=%s", suppressed(r.getOutput(false)),
                                 node.getHighestScore());
        } finally {
            for (String q : QIS) {
                def.resetMinimumGeneralization(q);
                def.resetMaximumGeneralization(q);
            }
            data.getHandle().release();
        }
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] cmd = line.trim().split("\\s+");
            String answer;
            try {
                switch (cmd[0]) {
                    case "load":
                        data = Data.create(cmd[1] + "/" + cmd[2], StandardCharsets.UTF_8, ';');
                        for (String q : QIS) data.getDefinition().setAttributeType(q, hierarchy(cmd[1], q));
                        occupation = hierarchy(cmd[1], SENS);
                        answer = "ok rows=" + data.getHandle().getNumRows() + " java=" + System.getProperty("java.version");
                        break;
                    case "run": answer = run(cmd[1]); break;
                    case "score": answer = score(cmd[1], cmd[2]); break;
                    case "quit": return;
                    default: answer = "error unknown command " + cmd[0];
                }
            } catch (Exception e) {
                answer = "error " + e.toString().replace('\n', ' ');
            }
            System.out.println(answer);
            System.out.flush();
        }
    }
}
