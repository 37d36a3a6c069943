# frozen_string_literal: true

# Oracle: would a Ruby (Rack 2) IdP read this raw HTTP/1.1 request as a refresh grant?
#
# Protocol: JSON lines on stdin {"id", "raw": base64}; one line per input on stdout, in order,
# {"id", "refresh", "token", "note"}. Debian's ruby and ruby-rack (Rack 2.2). The raw bytes are
# framed here (request line, headers, Transfer-Encoding: chunked, Content-Length, pipelined
# requests, as Puma or Unicorn hand them over: repeated headers joined with ", "), then put in a
# Rack env and read by Rack's own Rack::Request:
#   - "Request#POST": Rack::Request#POST. It reads the body, whatever the method, when the media type
#     (Content-Type cut at ';' or ',', right-stripped, lower-cased) is
#     application/x-www-form-urlencoded or multipart/form-data, or multipart/related or
#     multipart/mixed, or when the method is exactly "POST" and there is no Content-Type (or an
#     empty one); no charset is applied; one trailing NUL byte is dropped; then
#     Rack::Utils.parse_nested_query with '&': leading '[' and ']' and the ']' after a name are
#     stripped ("grant_type]", "[grant_type]" are "grant_type"), "a[b]" nests, "a[]" makes an
#     array, the last duplicate wins, a bad %-escape raises (a 400 in Rails).
#   - "Request#params": Rack::Request#params (GET.merge(POST): the body wins; Sinatra, Grape on Rack).
#   - "rails": ActionDispatch::Request#parameters' order (POST.merge(GET): the query wins; only
#     an EOFError of the body falls back to the query alone). Doorkeeper reads these.
#   - "Request#GET": Rack::Request#GET alone (parse_nested_query of the query with '&' and ';').
# Refresh if some reading has params["grant_type"] == "refresh_token" (Doorkeeper compares
# exactly) and params["refresh_token"] a non-empty String. A Hash or Array grant_type never
# counts (the note says so). The path is not checked.

require 'base64'
require 'json'
require 'stringio'
require 'rack'

MAX_REQUESTS = 8 # pipelined requests read from one input
TOKEN_CHARS = /\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\z/n.freeze

# Where a server answers 4xx/5xx (or waits for more bytes).
class Refused < StandardError; end

# Valid UTF-8 for the JSON answer.
def utf8(str)
  str.dup.force_encoding(Encoding::UTF_8).scrub
end

# Reads one raw input: a request at a time.
class Framer
  def initialize(raw)
    @raw = raw
    @pos = 0
  end

  # One line ending in LF (CR before it dropped), or nil at the end of the input.
  def read_line
    eol = @raw.index("\n", @pos)
    return nil unless eol

    line = @raw.byteslice(@pos, eol - @pos)
    @pos = eol + 1
    line.end_with?("\r") ? line.byteslice(0, line.bytesize - 1) : line
  end

  def read_bytes(count, what)
    raise Refused, "incomplete #{what}" if @raw.bytesize - @pos < count

    data = @raw.byteslice(@pos, count)
    @pos += count
    data
  end

  # The next request: [method, target, version, headers (lower-case name => values), body],
  # nil when only blank lines are left.
  def request
    line = ''
    while line.empty? # blank lines before a request line are ignored
      line = read_line
      next unless line.nil?
      raise Refused, 'incomplete request line' if @pos < @raw.bytesize

      return nil
    end
    parts = line.split(/ /n, -1)
    raise Refused, '400 bad request line' unless parts.size == 3 && parts[0] =~ TOKEN_CHARS && !parts[1].empty?

    method, target, version = parts
    raise Refused, "505 version #{version}" unless version =~ %r{\AHTTP/1\.[01]\z}n

    headers = read_headers
    [method, target, version, headers, read_body(headers)]
  end

  def read_headers
    headers = Hash.new { |h, k| h[k] = [] }
    loop do
      line = read_line
      raise Refused, 'incomplete headers' if line.nil?
      break if line.empty?
      raise Refused, '400 obs-fold' if line.start_with?(' ', "\t")

      name, value = line.split(':', 2)
      raise Refused, '400 bad header line' if value.nil? || name !~ TOKEN_CHARS

      value = value.gsub(/\A[ \t]+|[ \t]+\z/n, '')
      raise Refused, '400 control character in a header' if value.include?("\0") || value.include?("\r")

      headers[name.downcase] << value
    end
    headers
  end

  def list(values)
    values.join(',').split(',').map { |v| v.strip.downcase }.reject(&:empty?)
  end

  def read_body(headers)
    if headers.key?('transfer-encoding')
      codings = list(headers['transfer-encoding'])
      raise Refused, "501 transfer-encoding #{codings.join(',')}" unless codings == ['chunked']

      read_chunked
    elsif headers.key?('content-length')
      lengths = headers['content-length'].join(',').split(',').map(&:strip).uniq
      raise Refused, "400 content-length #{lengths.join(',')}" unless lengths.size == 1 && lengths[0] =~ /\A\d{1,15}\z/n

      read_bytes(lengths[0].to_i, 'body')
    else
      String.new(encoding: Encoding::BINARY)
    end
  end

  def read_chunked
    body = String.new(encoding: Encoding::BINARY)
    loop do
      line = read_line
      raise Refused, 'incomplete chunk size' if line.nil?

      size = line.split(';', 2)[0].to_s.strip
      raise Refused, "400 chunk size #{size}" unless size =~ /\A\h{1,15}\z/n

      count = size.to_i(16)
      if count.zero?
        loop do # trailers
          trailer = read_line
          raise Refused, 'incomplete trailers' if trailer.nil?
          break if trailer.empty?
        end
        return body
      end
      body << read_bytes(count, 'chunk')
      raise Refused, '400 chunk not followed by CRLF' unless read_line == ''
    end
  end
end

# The Rack env a server builds for the request.
def rack_env(method, target, headers, body)
  path, query = target.split('#', 2)[0].split('?', 2)
  env = {
    'REQUEST_METHOD' => method, 'SCRIPT_NAME' => '', 'PATH_INFO' => path, 'QUERY_STRING' => query || '',
    'SERVER_NAME' => 'idp', 'SERVER_PORT' => '80', 'SERVER_PROTOCOL' => 'HTTP/1.1',
    'rack.url_scheme' => 'http', 'rack.input' => StringIO.new(body), 'rack.errors' => $stderr
  }
  env['CONTENT_TYPE'] = headers['content-type'].join(', ') if headers.key?('content-type')
  env['CONTENT_LENGTH'] = headers['content-length'].join(', ') if headers.key?('content-length')
  headers.each do |name, values|
    next if %w[content-type content-length].include?(name)

    env["HTTP_#{name.upcase.tr('-', '_')}"] = values.join(', ')
  end
  env
end

def describe(value)
  case value
  when Hash then 'a Hash'
  when Array then 'an Array'
  else utf8(value.inspect)
  end
end

# [refresh, token, note] of one request.
def judge_one(method, target, headers, body)
  request = Rack::Request.new(rack_env(method, target, headers, body))
  readings = {
    'Request#POST' => -> { request.POST },
    'Request#params' => -> { request.params },
    'rails' => lambda {
      begin
        request.POST.merge(request.GET)
      rescue EOFError
        request.GET
      end
    },
    'Request#GET' => -> { request.GET }
  }
  seen = {} # reason => the first reading that gave it
  readings.each do |label, read|
    params = begin
      read.call
    rescue StandardError => e
      seen["error #{e.class}: #{utf8(e.message)}"] ||= label
      next
    end
    grant = params['grant_type']
    token = params['refresh_token']
    if grant != 'refresh_token'
      seen["grant_type=#{describe(grant)}"] ||= label unless grant.nil?
      next
    end
    unless token.is_a?(String) && !token.empty?
      seen["refresh_token=#{describe(token)}"] ||= label
      next
    end
    return [true, utf8(token), "#{method} #{label}"]
  end
  media_type = request.media_type
  reasons = seen.map { |reason, label| "#{label} #{reason}" }
  reasons = ['no grant_type'] if reasons.empty?
  [false, nil, "#{method} not a refresh grant: #{reasons.join(', ')}; media type #{describe(media_type)}"]
end

def judge(raw)
  framer = Framer.new(raw)
  notes = []
  MAX_REQUESTS.times do
    begin
      parsed = framer.request
    rescue Refused => e
      notes << "refused #{e.message}"
      break
    end
    break if parsed.nil?

    method, target, version, headers, body = parsed
    refresh, token, note = judge_one(method, target, headers, body)
    notes << note
    return [true, token, notes.join('; ')] if refresh

    connection = headers.fetch('connection', []).join(',').split(',').map { |c| c.strip.downcase }
    keep_alive = version == 'HTTP/1.1' ? !connection.include?('close') : connection.include?('keep-alive')
    break unless keep_alive
  end
  [false, nil, notes.empty? ? 'nothing parsed' : notes.join('; ')]
end

$stdin.binmode
$stdout.sync = true
$stdin.each_line do |line|
  next if line.strip.empty?

  id = nil
  begin
    input = JSON.parse(line)
    id = input['id']
    refresh, token, note = judge(Base64.strict_decode64(input['raw'].to_s).b)
  rescue StandardError => e
    refresh = false
    token = nil
    note = "error #{e.class}: #{e.message}"
  end
  $stdout.write(JSON.generate({ 'id' => id, 'refresh' => refresh, 'token' => token, 'note' => utf8(note) }), "\n")
end
