import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

class Main {
	public static void main(String[] args) throws Exception {
		BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
		PrintStream out = new PrintStream(System.out, true, "UTF-8");
		out.println("in: " + in.readLine());
		for (String a : args)
			out.println("arg: " + a);
		out.println("héllo wörld ✓");
		System.exit(3);
	}
}
