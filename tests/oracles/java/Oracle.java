// Oracle: would a Java servlet IdP (Jetty 9.4, Debian's libjetty9-java) read this raw HTTP/1.1
// request as a refresh grant?
//
// Protocol: JSON lines on stdin {"id", "raw": base64}; one line per input on stdout, in order,
// {"id", "refresh", "token", "note"}. Each input goes on a fresh TCP connection to an embedded
// Jetty Server (ServerConnector on 127.0.0.1:0; a LocalConnector sometimes misses the end of
// input of a body cut short and waits out the idle timeout), then the client half-closes.
// Jetty's defaults are untouched: RFC 7230 compliance, form bodies only for the
// HttpConfiguration's form-encoded methods, the context's maximum form size and keys.
// A servlet, for every method, calls getParameter("grant_type") and
// getParameter("refresh_token"): the body decoded by Jetty's UrlEncoded in the request's
// charset, the query merged. Refresh if grant_type is "refresh_token" exactly or after trim()
// and equalsIgnoreCase, and refresh_token.trim() is not empty. An exception from getParameter
// is not a refresh grant: the note says "error".

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;
import org.eclipse.jetty.util.ajax.JSON;

public class Oracle {
    /** One request's reading. */
    record Verdict(boolean refresh, String token, String note) {}

    /** What each connection's requests were read as, keyed by the client's port. */
    static final Map<Integer, List<Verdict>> READ = new ConcurrentHashMap<>();

    /** Reads the parameters the way a token endpoint servlet does, for every method. */
    public static class TokenServlet extends HttpServlet {
        private static final long serialVersionUID = 1L;

        @Override
        protected void service(HttpServletRequest req, HttpServletResponse resp) {
            Verdict v;
            try {
                String gt = req.getParameter("grant_type");
                String rt = req.getParameter("refresh_token");
                boolean exact = "refresh_token".equals(gt);
                boolean lenient = gt != null && gt.trim().equalsIgnoreCase("refresh_token");
                boolean refresh = (exact || lenient) && rt != null && !rt.trim().isEmpty();
                v = new Verdict(refresh, rt, req.getMethod() + " grant_type=" + JSON.toString(gt)
                        + (refresh && !exact ? " (trim/ignore case)" : "")
                        + " charset=" + req.getCharacterEncoding());
            } catch (Throwable e) {
                v = new Verdict(false, null, req.getMethod() + " error " + e);
            }
            READ.computeIfAbsent(req.getRemotePort(), k -> new ArrayList<>()).add(v);
            resp.setStatus(200);
        }
    }

    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), false, "UTF-8");
        System.setOut(System.err); // Jetty's own logging stays off the protocol
        Server server = new Server();
        ServerConnector connector = new ServerConnector(server);
        connector.setHost("127.0.0.1");
        connector.setPort(0);
        server.addConnector(connector);
        ServletContextHandler context = new ServletContextHandler();
        context.setContextPath("/");
        context.addServlet(new ServletHolder(new TokenServlet()), "/*");
        server.setHandler(context);
        server.start();

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            if (line.isBlank()) continue;
            Object id = null;
            Verdict v;
            try {
                @SuppressWarnings("unchecked")
                Map<String, Object> input = (Map<String, Object>) JSON.parse(line);
                id = input.get("id");
                v = judge(connector.getLocalPort(), Base64.getDecoder().decode((String) input.get("raw")));
            } catch (Throwable e) {
                v = new Verdict(false, null, "error " + e);
            }
            Map<String, Object> answer = new LinkedHashMap<>();
            answer.put("id", id);
            answer.put("refresh", v.refresh());
            answer.put("token", v.token());
            answer.put("note", v.note());
            out.println(JSON.toString(answer));
            out.flush();
        }
        server.stop();
        System.exit(0);
    }

    /** Sends raw on a fresh connection, half-closes, and collects what the server read. */
    static Verdict judge(int port, byte[] raw) throws Exception {
        String response;
        int local;
        try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), port)) {
            socket.setSoTimeout(3000);
            local = socket.getLocalPort();
            try {
                socket.getOutputStream().write(raw);
                socket.shutdownOutput();
            } catch (IOException e) {
                // the server may close early (a bad request): still read what it answered
            }
            ByteArrayOutputStream got = new ByteArrayOutputStream();
            try {
                socket.getInputStream().transferTo(got);
            } catch (IOException e) {
                // a reset or timeout: what was read so far is the answer
            }
            response = got.toString(StandardCharsets.ISO_8859_1);
        }
        List<Verdict> read = READ.remove(local);
        List<String> notes = new ArrayList<>();
        if (read != null) {
            for (Verdict v : read) {
                if (v.refresh()) return v;
                notes.add(v.note());
            }
        } else {
            int eol = response.indexOf("\r\n");
            notes.add("refused " + (eol >= 0 ? response.substring(0, eol) : response.isEmpty() ? "(no response)" : response));
        }
        return new Verdict(false, null, String.join("; ", notes));
    }
}
