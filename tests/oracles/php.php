<?php
// Oracle: would a PHP IdP read this raw HTTP/1.1 request as a refresh grant?
//
// Protocol: JSON lines on stdin {"id", "raw": base64}; one line per input on stdout, in order,
// {"id", "refresh", "token", "note"}. php-cli, standard library only (started with -n: PHP's
// built-in ini defaults, arg_separator.input "&", max_input_vars 1000). The raw bytes are framed
// here (request line, headers, Transfer-Encoding: chunked, Content-Length, pipelined requests,
// as a front server hands them to PHP), then the body is read the ways PHP apps read it:
//   - "$_POST": PHP's SAPI (sapi_activate / sapi_read_post_data) reads a body into $_POST only
//     when the method is exactly "POST" and the Content-Type, lower-cased and cut at the first
//     ';', ',' or ' ', is "application/x-www-form-urlencoded" (no charset is applied). Its reader
//     (add_post_var) splits the body on '&' binary-safely, then each name goes through
//     php_register_variable_ex like parse_str's: this is parse_str of the body with raw NULs
//     escaped (parse_str itself stops at a raw NUL). Read alone (league/oauth2-server via PSR-7),
//     as $_REQUEST (request_order "GP": the body wins over the query) and query first (Symfony's
//     Request::get()).
//   - "parse_str": parse_str() of the body, any method (Symfony's createFromGlobals for
//     PUT/DELETE/PATCH, Laravel on top of it, hand-written php://input readers), when the media
//     type is a form by the SAPI's rule or by Symfony's (Content-Type starts with
//     "application/x-www-form-urlencoded", case-sensitive). Alone, body first (Laravel input())
//     and query first (Symfony get()).
// The query string is parse_str'd as PHP fills $_GET. parse_str's own rules apply throughout:
// '.', ' ' and the first unmatched '[' in a name become '_', leading spaces are dropped, a name
// ends at a NUL byte, "a[b]=" makes arrays, the last duplicate wins.
// Refresh if some reading's grant_type is a string equal to "refresh_token" (league compares
// exactly; a trim() reading is the second chance, noted "trim") and refresh_token is a non-empty
// string. An array grant_type never counts (the note says so). The path is not checked.

const MAX_REQUESTS = 8; // pipelined requests read from one input
const FORM = 'application/x-www-form-urlencoded';

if (ini_get('arg_separator.input') !== '&') {
    fwrite(STDERR, "php oracle: arg_separator.input is not '&' (start php with -n)\n");
    exit(2);
}

final class Refused extends Exception
{
}

/** One line ending in LF (CR before it dropped), or null at the end of the input. */
function read_line(string $raw, int &$pos): ?string
{
    $eol = strpos($raw, "\n", $pos);
    if ($eol === false) {
        return null;
    }
    $line = substr($raw, $pos, $eol - $pos);
    $pos = $eol + 1;
    return str_ends_with($line, "\r") ? substr($line, 0, -1) : $line;
}

function is_token(string $s): bool
{
    return $s !== '' && strspn($s, "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") === strlen($s);
}

/**
 * The next request at $pos: [method, target, version, headers (lower-case name => values), body],
 * null when only blank lines are left. Throws Refused where a server answers 4xx/5xx.
 */
function parse_request(string $raw, int &$pos): ?array
{
    do { // blank lines before a request line are ignored
        $line = read_line($raw, $pos);
        if ($line === null) {
            if ($pos < strlen($raw)) {
                throw new Refused('incomplete request line');
            }
            return null;
        }
    } while ($line === '');
    $parts = explode(' ', $line);
    if (count($parts) !== 3 || !is_token($parts[0]) || $parts[1] === '') {
        throw new Refused('400 bad request line');
    }
    [$method, $target, $version] = $parts;
    if (!preg_match('#^HTTP/1\.[01]$#', $version)) {
        throw new Refused("505 version $version");
    }
    $headers = [];
    while (true) {
        $line = read_line($raw, $pos);
        if ($line === null) {
            throw new Refused('incomplete headers');
        }
        if ($line === '') {
            break;
        }
        if ($line[0] === ' ' || $line[0] === "\t") {
            throw new Refused('400 obs-fold');
        }
        $colon = strpos($line, ':');
        if ($colon === false || !is_token(substr($line, 0, $colon))) {
            throw new Refused('400 bad header line');
        }
        $value = trim(substr($line, $colon + 1), " \t");
        if (strpbrk($value, "\0\r") !== false) {
            throw new Refused('400 control character in a header');
        }
        $headers[strtolower(substr($line, 0, $colon))][] = $value;
    }
    if (isset($headers['transfer-encoding'])) {
        $codings = array_values(array_filter(array_map(
            fn ($c) => strtolower(trim($c, " \t")),
            explode(',', implode(',', $headers['transfer-encoding']))
        ), fn ($c) => $c !== ''));
        if ($codings !== ['chunked']) {
            throw new Refused('501 transfer-encoding ' . implode(',', $codings));
        }
        $body = read_chunked($raw, $pos);
    } elseif (isset($headers['content-length'])) {
        $lengths = array_unique(array_map(fn ($v) => trim($v, " \t"), explode(',', implode(',', $headers['content-length']))));
        if (count($lengths) !== 1 || !preg_match('/^[0-9]{1,15}$/', $lengths[0])) {
            throw new Refused('400 content-length ' . implode(',', $lengths));
        }
        $n = (int) $lengths[0];
        if (strlen($raw) - $pos < $n) {
            throw new Refused('incomplete body');
        }
        $body = substr($raw, $pos, $n);
        $pos += $n;
    } else {
        $body = '';
    }
    return [$method, $target, $version, $headers, $body];
}

function read_chunked(string $raw, int &$pos): string
{
    $body = '';
    while (true) {
        $line = read_line($raw, $pos);
        if ($line === null) {
            throw new Refused('incomplete chunk size');
        }
        $size = trim(explode(';', $line, 2)[0], " \t");
        if (!preg_match('/^[0-9A-Fa-f]{1,15}$/', $size)) {
            throw new Refused('400 chunk size ' . $size);
        }
        $n = hexdec($size);
        if ($n === 0) {
            do { // trailers
                $line = read_line($raw, $pos);
                if ($line === null) {
                    throw new Refused('incomplete trailers');
                }
            } while ($line !== '');
            return $body;
        }
        if (strlen($raw) - $pos < $n) {
            throw new Refused('incomplete chunk');
        }
        $body .= substr($raw, $pos, $n);
        $pos += $n;
        if (read_line($raw, $pos) !== '') {
            throw new Refused('400 chunk not followed by CRLF');
        }
    }
}

function parse(string $s): array
{
    $params = [];
    parse_str($s, $params);
    return $params;
}

function describe(mixed $v): string
{
    return is_array($v) ? 'array' : json_encode($v, JSON_INVALID_UTF8_SUBSTITUTE | JSON_UNESCAPED_SLASHES);
}

/** [refresh, token, note] of one request. */
function judge_one(string $method, string $target, array $headers, string $body): array
{
    $ct = isset($headers['content-type']) ? implode(', ', $headers['content-type']) : null;
    $sapi_type = $ct === null ? null : strtolower(substr($ct, 0, strcspn($ct, ';, ')));
    $sapi_form = $sapi_type === FORM;
    $symfony_form = $ct !== null && str_starts_with($ct, FORM);

    $query_string = explode('#', $target, 2)[0];
    $query_string = str_contains($query_string, '?') ? explode('?', $query_string, 2)[1] : '';
    $get = parse($query_string);

    $readings = []; // label => params
    if ($method === 'POST' && $sapi_form) {
        $post = parse(str_replace("\0", '%00', $body));
        $readings['$_POST'] = $post;
        $readings['$_REQUEST'] = array_replace($get, $post);
        $readings['$_POST query first'] = array_replace($post, $get);
    }
    if ($sapi_form || $symfony_form) {
        $by = $sapi_form ? 'parse_str' : 'parse_str (Symfony prefix)';
        $parsed = parse($body);
        $readings[$by] = $parsed;
        $readings["$by+query"] = array_replace($get, $parsed);
        $readings["$by query first"] = array_replace($parsed, $get);
    }
    $readings['$_GET'] = $get;

    $seen = []; // reason => the first reading that gave it
    foreach ($readings as $label => $p) {
        $grant = $p['grant_type'] ?? null;
        $token = $p['refresh_token'] ?? null;
        if (is_array($grant)) {
            $seen['grant_type is an array'] ??= $label;
            continue;
        }
        if (!is_string($grant)) {
            continue;
        }
        $exact = $grant === 'refresh_token';
        if (!$exact && trim($grant) !== 'refresh_token') {
            $seen['grant_type=' . describe($grant)] ??= $label;
            continue;
        }
        if (!is_string($token) || $token === '') {
            $seen['refresh_token=' . describe($token)] ??= $label;
            continue;
        }
        return [true, $token, "$method $label" . ($exact ? '' : ' trim')];
    }
    $why = $ct === null ? 'no content-type' : "content-type " . describe($ct);
    if (!$sapi_form && !$symfony_form) {
        $why .= ' (body not read)';
    }
    $reasons = [];
    foreach ($seen as $reason => $first) { // each reason once, with the first reading that gave it
        $reasons[] = "$first $reason";
    }
    return [false, null, "$method not a refresh grant: " . (implode(', ', $reasons) ?: 'no grant_type') . "; $why"];
}

function judge(string $raw): array
{
    $pos = 0;
    $notes = [];
    for ($i = 0; $i < MAX_REQUESTS; $i++) {
        try {
            $request = parse_request($raw, $pos);
        } catch (Refused $e) {
            $notes[] = 'refused ' . $e->getMessage();
            break;
        }
        if ($request === null) {
            break;
        }
        [$method, $target, $version, $headers, $body] = $request;
        [$refresh, $token, $note] = judge_one($method, $target, $headers, $body);
        if ($refresh) {
            $notes[] = $note;
            return [true, $token, implode('; ', $notes)];
        }
        $notes[] = $note;
        $connection = array_map(fn ($c) => strtolower(trim($c, " \t")), explode(',', implode(',', $headers['connection'] ?? [])));
        $keep_alive = $version === 'HTTP/1.1' ? !in_array('close', $connection, true) : in_array('keep-alive', $connection, true);
        if (!$keep_alive) {
            break;
        }
    }
    return [false, null, implode('; ', $notes) ?: 'nothing parsed'];
}

while (($line = fgets(STDIN)) !== false) {
    if (trim($line) === '') {
        continue;
    }
    $id = null;
    try {
        $input = json_decode($line, true, 4, JSON_THROW_ON_ERROR);
        $id = $input['id'] ?? null;
        $raw = base64_decode((string) ($input['raw'] ?? ''), true);
        if ($raw === false) {
            throw new Exception('raw is not base64');
        }
        [$refresh, $token, $note] = judge($raw);
    } catch (Throwable $e) {
        [$refresh, $token, $note] = [false, null, 'error ' . get_class($e) . ': ' . $e->getMessage()];
    }
    $answer = json_encode(
        ['id' => $id, 'refresh' => $refresh, 'token' => $token, 'note' => $note],
        JSON_INVALID_UTF8_SUBSTITUTE | JSON_UNESCAPED_SLASHES
    );
    fwrite(STDOUT, $answer . "\n");
    fflush(STDOUT);
}
