/*
 * harness.h: what the C peers share. A program defines PROG (its name for
 * messages), includes this file once, and defines serve_conn (the server's
 * work on one accepted connection) and client_thread (one client's loop,
 * which asks next_phase before each operation and records the measured
 * ones). Here are the server's listening side and the client's side of
 * bench's protocol:
 *
 *   PROG server SOCKET MODE THREADS
 *       Listens on SOCKET, prints "ready" on stdout, and serves with
 *       THREADS threads that each accept one connection at a time. MODE is
 *       the program's. Exits when stdin reaches EOF or on SIGTERM.
 *
 *   PROG client SOCKET persistent|connect|stream SIZE CONNS WARMUP_MS DURATION_MS OUTFILE SERVER_PID [OPS]
 *       Waits for a line on stdin, then runs CONNS threads for WARMUP_MS,
 *       prints "warm", measures for DURATION_MS and prints
 *       "done OPS ERRORS ELAPSED_NS BYTES CLIENT_CPU_NS SERVER_CPU_NS". The
 *       latency of every measured operation goes to OUTFILE as native-endian
 *       int64 nanoseconds. The CPU times cover the measured window, read by
 *       the main thread at its edges (SERVER_CPU_NS from the server
 *       process's CPU clock, -1 if unreadable): with a thousand busy threads
 *       the benchmark process itself may be scheduled too late to read
 *       them at the right moments. With OPS, each thread stops after OPS
 *       measured operations instead, and the window lasts until all have.
 */
#ifndef HARNESS_H
#define HARNESS_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_MESSAGE (16 << 20)    /* the benchmark's message cap */
#define STACK_SIZE (256 << 10)    /* per-thread stack: 1024 threads stay small */
#define BACKLOG 4096

static void serve_conn(int fd);
static void *client_thread(void *arg);

static void die(const char *what)
{
	fprintf(stderr, PROG ": %s: %s\n", what, strerror(errno));
	exit(1);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

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
		fprintf(stderr, PROG ": socket path too long: %s\n", path);
		exit(2);
	}
	strcpy(sa.sun_path, path);
	return sa;
}

/* ---- server ---- */

static int listen_fd;

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

/* Listens on path, serves with threads threads and returns when stdin ends. */
static int serve(const char *path, int threads)
{
	struct sockaddr_un sa = address(path);
	if (threads < 1)
		threads = 1;
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0)
		die("socket");
	if (bind(listen_fd, (struct sockaddr *)&sa, sizeof sa)) {
		if (errno == EADDRINUSE) {
			fprintf(stderr, PROG ": socket path %s is already in use\n", path);
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
static size_t max_ops; /* measured operations per thread; 0: the window decides */

struct client {
	pthread_t t;
	int64_t *lat;
	size_t n, cap;
	long errors;
	long long bytes;
	const char *err;
};

/* The phase of c's next operation: STOP also once c has measured max_ops. */
static int next_phase(const struct client *c)
{
	int p = atomic_load_explicit(&phase, memory_order_relaxed);
	if (p == MEASURE && max_ops && c->n >= max_ops)
		return STOP;
	return p;
}

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
	if (argc != 10 && argc != 11)
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
	if (argc == 11)
		max_ops = (size_t)atol(argv[10]);
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
	int64_t t1 = 0, cli1 = 0, srv1 = 0;
	if (!max_ops) {
		sleep_ms(duration);
		t1 = now_ns();
		cli1 = self_cpu_ns();
		srv1 = process_cpu_ns(server_pid);
		atomic_store(&phase, STOP);
	}
	for (int i = 0; i < conns; i++)
		pthread_join(cs[i].t, NULL);
	if (client_mode == STREAM || max_ops) {
		/* The window ends when every stream was drained, or every thread done. */
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
			fprintf(stderr, PROG ": client %d: %s failed\n", i, cs[i].err);
	}
	if (fclose(out))
		die("close output");
	long long cli = cli0 >= 0 && cli1 >= 0 ? (long long)(cli1 - cli0) : -1;
	long long srv = srv0 >= 0 && srv1 >= 0 ? (long long)(srv1 - srv0) : -1;
	printf("done %lld %ld %lld %lld %lld %lld\n", ops, errors, (long long)(t1 - t0), bytes, cli, srv);
	fflush(stdout);
	return 0;
}

#endif
