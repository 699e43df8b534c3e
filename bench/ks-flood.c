/*
 * ks-flood: the benchmark's packet sender. Bounded in count and in time: it always stops by
 * itself (and on SIGINT/SIGTERM), then prints one JSON line with what it sent.
 *
 *   ks-flood udp DST_IP DST_PORT (--payloads FILE | --garbage LEN) [common options]
 *       UDP datagrams from an ordinary unconnected socket (real source address). FILE holds
 *       one payload per line in hex; they are sent round-robin. --garbage LEN sends random
 *       bytes (a pool of 4096 different payloads of LEN bytes).
 *
 *   ks-flood syn DST_IP DST_PORT --sources A.B.C.D/COUNT [common options]
 *       TCP SYNs with spoofed source addresses from a raw socket (IP_HDRINCL): COUNT
 *       consecutive addresses starting at A.B.C.D, used in turn (so at least COUNT packets
 *       give COUNT distinct sources), random source port and sequence number.
 *
 * Common options:
 *   --rate PPS      packets per second (0 = as fast as possible; default 0)
 *   --count N       stop after N packets (default 1000000)
 *   --seconds S     stop after S seconds whatever the count (default 30, at most 600)
 *   --batch B       packets per sendmmsg call (default: adapted to the rate, at most 64)
 *
 * Output (stdout): {"mode":"udp","sent":N,"errors":N,"seconds":S,"pps":R,"rate":R0,...,
 *                  "cpu_user_s":U,"cpu_sys_s":S} (the sender's own CPU time, getrusage)
 *
 * Only meant for the benchmark's own network namespaces (bench/run): it sends to the one
 * destination it is given and nowhere else.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 64
#define POOL 4096
#define MAX_PAYLOAD 1472

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void die(const char *msg) {
    fprintf(stderr, "ks-flood: %s\n", msg);
    exit(2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec += 1; ts.tv_nsec -= 1000000000L; }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stop_flag) {
    }
}

/* xorshift64*: fast, good enough for garbage and sequence numbers. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

struct payload { size_t len; unsigned char *data; };

static size_t load_payloads(const char *path, struct payload *pool) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open the payload file");
    size_t n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while (n < POOL && (got = getline(&line, &cap, f)) > 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r' || line[got - 1] == ' ')) got--;
        if (got == 0) continue;
        if (got % 2 != 0 || got / 2 > MAX_PAYLOAD) die("bad payload line (odd length or too long)");
        pool[n].len = (size_t)got / 2;
        pool[n].data = malloc(pool[n].len);
        if (!pool[n].data) die("out of memory");
        for (ssize_t i = 0; i < got / 2; i++) {
            int hi = hexval(line[2 * i]), lo = hexval(line[2 * i + 1]);
            if (hi < 0 || lo < 0) die("bad hex in the payload file");
            pool[n].data[i] = (unsigned char)(hi << 4 | lo);
        }
        n++;
    }
    free(line);
    fclose(f);
    if (n == 0) die("the payload file is empty");
    return n;
}

static uint16_t csum_fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static uint32_t csum_add(uint32_t sum, const void *buf, size_t len) {
    const uint8_t *p = buf;
    while (len > 1) { sum += (uint32_t)p[0] << 8 | p[1]; p += 2; len -= 2; }
    if (len) sum += (uint32_t)p[0] << 8;
    return sum;
}

struct synpkt { struct iphdr ip; struct tcphdr tcp; } __attribute__((packed));

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: ks-flood udp|syn DST_IP DST_PORT [--payloads FILE | --garbage LEN | "
                        "--sources A.B.C.D/COUNT] [--rate PPS] [--count N] [--seconds S] [--batch B]\n");
        return 2;
    }
    const char *mode = argv[1];
    int syn = strcmp(mode, "syn") == 0;
    if (!syn && strcmp(mode, "udp") != 0) die("mode must be udp or syn");
    struct sockaddr_in dst = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1) die("bad destination address");
    int dport = atoi(argv[3]);
    if (dport < 1 || dport > 65535) die("bad destination port");
    dst.sin_port = htons((uint16_t)dport);

    const char *payload_file = NULL;
    long garbage = -1;
    double rate = 0, seconds = 30;
    long long count = 1000000;
    int batch = 0;
    uint32_t src_base = 0;
    uint32_t src_count = 0;
    for (int i = 4; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) die("option without a value");
        if (!strcmp(a, "--payloads")) payload_file = v;
        else if (!strcmp(a, "--garbage")) garbage = atol(v);
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--count")) count = atoll(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--sources")) {
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            char *slash = strchr(buf, '/');
            if (!slash) die("--sources wants A.B.C.D/COUNT");
            *slash = 0;
            struct in_addr base;
            if (inet_pton(AF_INET, buf, &base) != 1) die("bad --sources address");
            src_base = ntohl(base.s_addr);
            src_count = (uint32_t)strtoul(slash + 1, NULL, 10);
            if (src_count == 0 || src_count > (1u << 24)) die("bad --sources count");
        } else die("unknown option");
        i++;
    }
    if (seconds <= 0 || seconds > 600) die("--seconds must be in (0, 600]");
    if (count <= 0) die("--count must be positive");
    if (rate < 0) die("--rate must be >= 0");
    if (batch <= 0) {
        /* Small batches at low rates keep the flood smooth (one call per ~0.2 ms at least). */
        batch = rate == 0 ? MAX_BATCH : (int)(rate / 5000);
        if (batch < 1) batch = 1;
        if (batch > MAX_BATCH) batch = MAX_BATCH;
    }
    if (batch > MAX_BATCH) batch = MAX_BATCH;
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    static struct payload pool[POOL];
    size_t npool = 0;
    int fd;
    if (!syn) {
        if (payload_file) {
            npool = load_payloads(payload_file, pool);
        } else if (garbage > 0 && garbage <= MAX_PAYLOAD) {
            rng_state ^= (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
            for (size_t i = 0; i < POOL; i++) {
                pool[i].len = (size_t)garbage;
                pool[i].data = malloc((size_t)garbage);
                if (!pool[i].data) die("out of memory");
                for (long j = 0; j < garbage; j++) pool[i].data[j] = (unsigned char)rnd();
            }
            npool = POOL;
        } else die("udp needs --payloads FILE or --garbage LEN (1..1472)");
        fd = socket(AF_INET, SOCK_DGRAM, 0);
    } else {
        if (!src_count) die("syn needs --sources A.B.C.D/COUNT");
        fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    }
    if (fd < 0) { perror("ks-flood: socket"); return 2; }
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iovs[MAX_BATCH];
    static struct synpkt syns[MAX_BATCH];
    for (int i = 0; i < MAX_BATCH; i++) {
        msgs[i].msg_hdr.msg_name = &dst;
        msgs[i].msg_hdr.msg_namelen = sizeof dst;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    long long sent = 0, errors = 0, calls = 0;
    size_t next_payload = 0;
    uint32_t next_src = 0;
    double start = now_s();
    double deadline = start + seconds;
    double t = start;
    while (!stop_flag && sent < count) {
        int n = batch;
        if (count - sent < n) n = (int)(count - sent);
        if (rate > 0) {
            double due = start + (double)sent / rate;
            if (due > t) { sleep_until(due); if (stop_flag) break; }
        }
        for (int i = 0; i < n; i++) {
            if (!syn) {
                struct payload *p = &pool[next_payload];
                next_payload = (next_payload + 1) % npool;
                iovs[i].iov_base = p->data;
                iovs[i].iov_len = p->len;
            } else {
                struct synpkt *s = &syns[i];
                memset(s, 0, sizeof *s);
                uint32_t src = src_base + next_src;
                next_src = (next_src + 1) % src_count;
                uint64_t r = rnd();
                s->ip.ihl = 5;
                s->ip.version = 4;
                s->ip.tot_len = htons(sizeof *s);
                s->ip.id = htons((uint16_t)(r >> 48));
                s->ip.ttl = 64;
                s->ip.protocol = IPPROTO_TCP;
                s->ip.saddr = htonl(src);
                s->ip.daddr = dst.sin_addr.s_addr;
                s->ip.check = 0; /* filled in by the kernel for IP_HDRINCL */
                s->tcp.source = htons((uint16_t)(1024 + (r & 0xffff) % 64511));
                s->tcp.dest = dst.sin_port;
                s->tcp.seq = htonl((uint32_t)(r >> 16));
                s->tcp.doff = 5;
                s->tcp.syn = 1;
                s->tcp.window = htons(64240);
                uint32_t sum = 0;
                sum = csum_add(sum, &s->ip.saddr, 4);
                sum = csum_add(sum, &s->ip.daddr, 4);
                sum += IPPROTO_TCP;
                sum += sizeof s->tcp;
                sum = csum_add(sum, &s->tcp, sizeof s->tcp);
                s->tcp.check = htons(csum_fold(sum));
                iovs[i].iov_base = s;
                iovs[i].iov_len = sizeof *s;
            }
        }
        int r = sendmmsg(fd, msgs, (unsigned)n, 0);
        calls++;
        if (r < 0) {
            if (errno == EINTR) continue;
            errors++;
            /* ENOBUFS and the like: back off a little rather than spin. */
            if (errors > 1000000) break;
        } else {
            sent += r;
            /* A short write means the next call restarts from the first unsent packet. */
            if (r < n && !syn) next_payload = (next_payload + npool - (size_t)(n - r)) % npool;
            if (r < n && syn) next_src = (next_src + src_count - (uint32_t)(n - r)) % src_count;
        }
        t = now_s();
        if (t >= deadline) break;
    }
    double elapsed = now_s() - start;
    uint32_t distinct = syn ? (sent < (long long)src_count ? (uint32_t)sent : src_count) : 0;
    /* The sender's own CPU time, user + system (Linux scales the tick-sampled split to the
     * scheduler's exact run time, so the sum is exact). It includes the softirq work the kernel
     * did in this thread's context: with veth, a sent packet is received, routed, bridged and
     * filtered on the sender's CPU when the send call re-enables bottom halves. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double cpu_sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("{\"mode\":\"%s\",\"sent\":%lld,\"errors\":%lld,\"calls\":%lld,\"seconds\":%.6f,"
           "\"pps\":%.1f,\"rate\":%.1f,\"batch\":%d,\"distinct_sources\":%u,\"stopped\":%s,"
           "\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f}\n",
           mode, sent, errors, calls, elapsed, elapsed > 0 ? (double)sent / elapsed : 0.0, rate, batch,
           distinct, stop_flag ? "\"signal\"" : (sent >= count ? "\"count\"" : "\"time\""),
           cpu_user, cpu_sys);
    return 0;
}
