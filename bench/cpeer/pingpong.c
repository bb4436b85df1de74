/*
 * pingpong.c: the C floor of pktipc's benchmarks. A blocking Unix-socket
 * server and client that exchange pkt-line messages (data packets of at most
 * 65516 payload bytes, then "0000"), as git's simple-ipc does, with nothing
 * in between: one thread per connection, blocking read(2) and writev(2).
 *
 *   pingpong server SOCKET echo|sink THREADS
 *       Listens on SOCKET, prints "ready" on stdout, serves with THREADS
 *       threads that each accept one connection at a time. echo answers each
 *       message with the same message; sink reads messages and answers only
 *       an empty one (the end of a stream). Exits when stdin reaches EOF or
 *       on SIGTERM.
 *
 *   pingpong client SOCKET persistent|connect|stream SIZE CONNS WARMUP_MS DURATION_MS OUTFILE SERVER_PID
 *       Waits for a line on stdin, then runs CONNS threads for WARMUP_MS,
 *       prints "warm", measures for DURATION_MS and prints
 *       "done OPS ERRORS ELAPSED_NS BYTES CLIENT_CPU_NS SERVER_CPU_NS". The
 *       latency of every measured operation goes to OUTFILE as native-endian
 *       int64 nanoseconds. The CPU times cover the measured window, read by
 *       the main thread at its edges (SERVER_CPU_NS from the server
 *       process's CPU clock, -1 if unreadable): with a thousand busy threads
 *       the benchmark process itself may be scheduled too late to read
 *       them at the right moments.
 *
 * Built by bench at run time with `cc -O2 -pthread`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_PACKET 65520          /* largest pkt-line, header included */
#define MAX_PAYLOAD (MAX_PACKET - 4)
#define MAX_MESSAGE (16 << 20)    /* the benchmark's message cap */
#define STACK_SIZE (256 << 10)    /* per-thread stack: 1024 threads stay small */
#define BACKLOG 4096

static void die(const char *what)
{
	fprintf(stderr, "pingpong: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

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

/* ---- common ---- */

static void watch_stdin_exit(void)
{
	char b[256];
	while (read(0, b, sizeof b) > 0)
		;
	_exit(0);
}

static void *stdin_thread(void *arg)
{
	(void)arg;
	watch_stdin_exit();
	return NULL;
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
	pthread_attr_t a;
	pthread_t t;
	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, STACK_SIZE);
	int rc = pthread_create(&t, &a, fn, arg);
	pthread_attr_destroy(&a);
	if (rc) {
		errno = rc;
		die("pthread_create");
	}
	return t;
}

static struct sockaddr_un address(const char *path)
{
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sa.sun_path) {
		fprintf(stderr, "pingpong: socket path too long: %s\n", path);
		exit(2);
	}
	strcpy(sa.sun_path, path);
	return sa;
}

/* ---- server ---- */

static int listen_fd;
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

static void *server_thread(void *arg)
{
	(void)arg;
	for (;;) {
		int fd = accept(listen_fd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
				continue;
			die("accept");
		}
		serve_conn(fd);
	}
	return NULL;
}

static int server(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	struct sockaddr_un sa = address(argv[2]);
	sink_mode = strcmp(argv[3], "sink") == 0;
	int threads = atoi(argv[4]);
	if (threads < 1)
		threads = 1;
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0)
		die("socket");
	if (bind(listen_fd, (struct sockaddr *)&sa, sizeof sa)) {
		if (errno == EADDRINUSE) {
			fprintf(stderr, "pingpong: socket path %s is already in use\n", argv[2]);
			exit(1);
		}
		die("bind");
	}
	if (listen(listen_fd, BACKLOG))
		die("listen");
	for (int i = 0; i < threads; i++)
		spawn(server_thread, NULL);
	printf("ready\n");
	fflush(stdout);
	watch_stdin_exit();
	return 0;
}

/* ---- client ---- */

enum { WARMUP, MEASURE, STOP };
enum { PERSISTENT, CONNECT, STREAM };

static _Atomic int phase = WARMUP;

/*
 * Client threads wait at this gate until all of them exist: with a thousand
 * busy threads, a main thread still creating the rest would get a
 * thousandth of a CPU and take seconds to finish.
 */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open;

static void wait_gate(void)
{
	pthread_mutex_lock(&gate_mu);
	while (!gate_open)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
}
static struct sockaddr_un server_addr;
static int client_mode;
static size_t msg_size;

struct client {
	pthread_t t;
	int64_t *lat;
	size_t n, cap;
	long errors;
	long long bytes;
	const char *err;
};

static int dial(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr)) {
		close(fd);
		return -1;
	}
	return fd;
}

static void record(struct client *c, int64_t ns)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 4096;
		c->lat = realloc(c->lat, c->cap * sizeof *c->lat);
		if (!c->lat)
			die("realloc");
	}
	c->lat[c->n++] = ns;
}

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
		int p = atomic_load_explicit(&phase, memory_order_relaxed);
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

static int64_t self_cpu_ns(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru))
		return -1;
	return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
	       ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* The CPU time of process pid, from its CPU-time clock (as clock_getcpuclockid). */
static int64_t process_cpu_ns(pid_t pid)
{
	struct timespec ts;
	clockid_t clk = (clockid_t)((~(unsigned)pid << 3) | 2);
	if (pid <= 0 || clock_gettime(clk, &ts))
		return -1;
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int client(int argc, char **argv)
{
	if (argc != 10)
		return 2;
	server_addr = address(argv[2]);
	if (!strcmp(argv[3], "persistent"))
		client_mode = PERSISTENT;
	else if (!strcmp(argv[3], "connect"))
		client_mode = CONNECT;
	else if (!strcmp(argv[3], "stream"))
		client_mode = STREAM;
	else
		return 2;
	msg_size = (size_t)atol(argv[4]);
	int conns = atoi(argv[5]);
	long warmup = atol(argv[6]), duration = atol(argv[7]);
	pid_t server_pid = (pid_t)atol(argv[9]);
	if (conns < 1 || msg_size > MAX_MESSAGE)
		return 2;

	char line[16];
	if (read(0, line, sizeof line) <= 0)
		return 1;
	spawn(stdin_thread, NULL);

	struct client *cs = calloc((size_t)conns, sizeof *cs);
	if (!cs)
		die("calloc");
	for (int i = 0; i < conns; i++)
		cs[i].t = spawn(client_thread, &cs[i]);
	pthread_mutex_lock(&gate_mu);
	gate_open = 1;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
	sleep_ms(warmup);
	int64_t cli0 = self_cpu_ns(), srv0 = process_cpu_ns(server_pid);
	int64_t t0 = now_ns();
	atomic_store(&phase, MEASURE);
	printf("warm\n");
	fflush(stdout);
	sleep_ms(duration);
	int64_t t1 = now_ns();
	int64_t cli1 = self_cpu_ns(), srv1 = process_cpu_ns(server_pid);
	atomic_store(&phase, STOP);
	for (int i = 0; i < conns; i++)
		pthread_join(cs[i].t, NULL);
	if (client_mode == STREAM) {
		/* The window ends when every stream was drained. */
		t1 = now_ns();
		cli1 = self_cpu_ns();
		srv1 = process_cpu_ns(server_pid);
	}

	FILE *out = fopen(argv[8], "wb");
	if (!out)
		die("open output");
	long long ops = 0, bytes = 0;
	long errors = 0;
	for (int i = 0; i < conns; i++) {
		if (cs[i].n && fwrite(cs[i].lat, sizeof(int64_t), cs[i].n, out) != cs[i].n)
			die("write output");
		ops += (long long)cs[i].n;
		bytes += cs[i].bytes;
		errors += cs[i].errors;
		if (cs[i].err)
			fprintf(stderr, "pingpong: client %d: %s failed\n", i, cs[i].err);
	}
	if (fclose(out))
		die("close output");
	long long cli = cli0 >= 0 && cli1 >= 0 ? (long long)(cli1 - cli0) : -1;
	long long srv = srv0 >= 0 && srv1 >= 0 ? (long long)(srv1 - srv0) : -1;
	printf("done %lld %ld %lld %lld %lld %lld\n", ops, errors, (long long)(t1 - t0), bytes, cli, srv);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && !strcmp(argv[1], "server"))
		return server(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return client(argc, argv);
	fprintf(stderr, "usage: pingpong server SOCKET echo|sink THREADS\n"
			"       pingpong client SOCKET persistent|connect|stream SIZE CONNS WARMUP_MS DURATION_MS OUTFILE SERVER_PID\n");
	return 2;
}
