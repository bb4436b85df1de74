/*
 * pingpong.c: the C floor of pktipc's benchmarks. A blocking Unix-socket
 * server and client that exchange pkt-line messages (data packets of at most
 * 65516 payload bytes, then "0000"), as git's simple-ipc does, with nothing
 * in between: one thread per connection, blocking read(2) and writev(2).
 *
 *   pingpong server SOCKET echo|sink THREADS
 *       echo answers each message with the same message; sink reads
 *       messages and answers only an empty one (the end of a stream).
 *
 *   pingpong client SOCKET persistent|connect|stream SIZE CONNS WARMUP_MS DURATION_MS OUTFILE SERVER_PID [OPS]
 *
 * The rest of both commands is harness.h's. Built by bench at run time
 * with `cc -O2 -pthread`.
 */
#define _GNU_SOURCE
#define PROG "pingpong"
#include <limits.h>
#include <sys/uio.h>

#include "harness.h"

#define MAX_PACKET 65520          /* largest pkt-line, header included */
#define MAX_PAYLOAD (MAX_PACKET - 4)

/* ---- pkt-line reading ---- */

struct reader {
	int fd;
	char *buf;
	size_t cap, r, w;
};

static void reader_init(struct reader *rd, int fd)
{
	rd->fd = fd;
	rd->cap = 16 << 10;
	rd->buf = malloc(rd->cap);
	rd->r = rd->w = 0;
	if (!rd->buf)
		die("malloc");
}

/* Makes at least need bytes available at buf+r; 0 on success, -1 on EOF or error. */
static int fill(struct reader *rd, size_t need)
{
	while (rd->w - rd->r < need) {
		if (rd->cap - rd->r < need) {
			if (rd->r > 0) {
				memmove(rd->buf, rd->buf + rd->r, rd->w - rd->r);
				rd->w -= rd->r;
				rd->r = 0;
			}
			if (rd->cap < need) {
				char *nb = realloc(rd->buf, need);
				if (!nb)
					die("realloc");
				rd->buf = nb;
				rd->cap = need;
			}
		}
		ssize_t n = read(rd->fd, rd->buf + rd->w, rd->cap - rd->w);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		rd->w += (size_t)n;
	}
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Reads one packet. Returns the payload length (>= 0) with *payload pointing
 * into the reader's buffer (valid until the next call), -1 for a flush, -2 on
 * EOF, error or a bad packet.
 */
static long read_packet(struct reader *rd, const char **payload)
{
	if (fill(rd, 4))
		return -2;
	long len = 0;
	for (int i = 0; i < 4; i++) {
		int v = hexval(rd->buf[rd->r + i]);
		if (v < 0)
			return -2;
		len = len << 4 | v;
	}
	if (len == 0) {
		rd->r += 4;
		return -1;
	}
	if (len < 4 || len > MAX_PACKET)
		return -2;
	if (fill(rd, (size_t)len))
		return -2;
	*payload = rd->buf + rd->r + 4;
	rd->r += (size_t)len;
	return len - 4;
}

struct buffer {
	char *p;
	size_t len, cap;
};

static void buffer_append(struct buffer *b, const char *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t c = b->cap ? b->cap : 4096;
		while (c < b->len + n)
			c *= 2;
		char *np = realloc(b->p, c);
		if (!np)
			die("realloc");
		b->p = np;
		b->cap = c;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

/*
 * Reads one message up to its flush. With msg, the payload is gathered into
 * it; without, it is only counted. Returns the payload length or -1.
 */
static long read_message(struct reader *rd, struct buffer *msg)
{
	long total = 0;
	if (msg)
		msg->len = 0;
	for (;;) {
		const char *p;
		long n = read_packet(rd, &p);
		if (n == -1)
			return total;
		if (n < 0)
			return -1;
		total += n;
		if (total > MAX_MESSAGE)
			return -1;
		if (msg)
			buffer_append(msg, p, (size_t)n);
	}
}

/* ---- pkt-line writing ---- */

static void put_header(char *h, size_t v)
{
	static const char hex[] = "0123456789abcdef";
	h[0] = hex[(v >> 12) & 15];
	h[1] = hex[(v >> 8) & 15];
	h[2] = hex[(v >> 4) & 15];
	h[3] = hex[v & 15];
}

static int writev_all(int fd, struct iovec *iov, int cnt)
{
	while (cnt > 0) {
		ssize_t n = writev(fd, iov, cnt > IOV_MAX ? IOV_MAX : cnt);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* Writes payload as one message: data packets, then a flush, in one writev. */
static int write_message(int fd, const char *payload, size_t len)
{
	size_t chunks = (len + MAX_PAYLOAD - 1) / MAX_PAYLOAD;
	struct iovec stack_iov[9];
	char stack_hdr[4 * 4];
	struct iovec *iov = stack_iov;
	char *hdr = stack_hdr;
	if (chunks > 4) {
		iov = malloc(sizeof(*iov) * (2 * chunks + 1));
		hdr = malloc(4 * chunks);
		if (!iov || !hdr)
			die("malloc");
	}
	int cnt = 0;
	for (size_t i = 0; i < chunks; i++) {
		size_t n = len - i * MAX_PAYLOAD;
		if (n > MAX_PAYLOAD)
			n = MAX_PAYLOAD;
		put_header(hdr + 4 * i, n + 4);
		iov[cnt++] = (struct iovec){hdr + 4 * i, 4};
		iov[cnt++] = (struct iovec){(char *)payload + i * MAX_PAYLOAD, n};
	}
	iov[cnt++] = (struct iovec){"0000", 4};
	int rc = writev_all(fd, iov, cnt);
	if (iov != stack_iov) {
		free(iov);
		free(hdr);
	}
	return rc;
}

/* ---- server ---- */

static int sink_mode;

static void serve_conn(int fd)
{
	struct reader rd;
	struct buffer msg = {0};
	reader_init(&rd, fd);
	for (;;) {
		long n = read_message(&rd, sink_mode ? NULL : &msg);
		if (n < 0)
			break;
		if (sink_mode && n > 0)
			continue;
		if (write_message(fd, msg.p, (size_t)n))
			break;
	}
	free(rd.buf);
	free(msg.p);
	close(fd);
}

static int server(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	sink_mode = strcmp(argv[3], "sink") == 0;
	return serve(argv[2], atoi(argv[4]));
}

/* ---- client ---- */

static void *client_thread(void *arg)
{
	struct client *c = arg;
	wait_gate();
	char *payload = malloc(msg_size ? msg_size : 1);
	if (!payload)
		die("malloc");
	for (size_t i = 0; i < msg_size; i++)
		payload[i] = 'a' + (char)(i % 26);
	struct reader rd;
	int fd = -1;
	if (client_mode != CONNECT) {
		fd = dial();
		if (fd < 0) {
			c->errors++;
			c->err = "connect";
			free(payload);
			return NULL;
		}
		reader_init(&rd, fd);
	}
	for (;;) {
		int p = next_phase(c);
		if (p == STOP)
			break;
		int64_t t0 = now_ns();
		if (client_mode == CONNECT) {
			fd = dial();
			if (fd < 0) {
				c->errors++;
				c->err = "connect";
				break;
			}
			reader_init(&rd, fd);
		}
		if (write_message(fd, payload, msg_size)) {
			c->errors++;
			c->err = "write";
			break;
		}
		long n = 0;
		if (client_mode != STREAM) {
			n = read_message(&rd, NULL);
			if (n != (long)msg_size) {
				c->errors++;
				c->err = "read";
				break;
			}
		}
		if (client_mode == CONNECT) {
			close(fd);
			free(rd.buf);
			fd = -1;
		}
		if (p == MEASURE) {
			record(c, now_ns() - t0);
			c->bytes += (long long)msg_size + n;
		}
	}
	if (client_mode == STREAM && fd >= 0 && !c->err) {
		/* An empty message; the sink answers it once all before it is read. */
		if (write_message(fd, NULL, 0) || read_message(&rd, NULL) != 0) {
			c->errors++;
			c->err = "stream ack";
		}
	}
	if (fd >= 0) {
		close(fd);
		free(rd.buf);
	}
	free(payload);
	return NULL;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && !strcmp(argv[1], "server"))
		return server(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return client(argc, argv);
	fprintf(stderr, "usage: pingpong server SOCKET echo|sink THREADS\n"
			"       pingpong client SOCKET persistent|connect|stream SIZE CONNS WARMUP_MS DURATION_MS OUTFILE SERVER_PID [OPS]\n");
	return 2;
}
