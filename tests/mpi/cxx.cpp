/* SPDX-License-Identifier: MIT */
/* The C++ header (sluice.hpp) drives a controller and a source through a whole job, using nothing else. */
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

/*
 * Run as `mpiexec -n 1 cxx controller : -n 1 cxx source`. Eight events on
 * two streams of run 1, lumi 1. Each way, each event carries a block
 * product (uint32_t) and an SoA product (float, double, uint16_t columns),
 * checked element by element. What it shows, and how:
 *
 *  - a view released by its destructor: no view is released by hand, yet
 *    the products of eight events (four per stream) add up to more than a
 *    stream's arena, so sends would time out if a view kept its region;
 *  - a token finished by its destructor (odd events; even ones call
 *    finish()): each stream is used again, which needs its previous event
 *    finished, and the source's last receive waits for that finish;
 *  - a reservation cancelled by its destructor: the controller's first
 *    reservation of each event (instance 5) is dropped unfinished, and the
 *    products sent after it reach the source before the event ends, which
 *    they could not if it were still open (products go out in reservation
 *    order); the source then sees instance 5 absent;
 *  - sluice::error with the right code: typed access of the wrong element
 *    type or layout on a reservation and on a view (SLUICE_ETYPE), a send
 *    on an instance this side receives (SLUICE_ENOTFOUND), a count that
 *    does not fit its bytes (SLUICE_EINVAL).
 */

namespace {

const char *role = "?";

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            std::fprintf(stderr, "[%s] %s:%d: check failed: %s\n", role, __FILE__, __LINE__,      \
                         #cond);                                                                   \
            std::exit(1);                                                                          \
        }                                                                                          \
    } while (0)

/* Runs `body`, which must throw sluice::error with status `want`. */
template <class F>
void expect_error(int want, F body, int line)
{
    try {
        body();
    } catch (const sluice::error &e) {
        if (e.code() == want)
            return;
        std::fprintf(stderr, "[%s] line %d: expected %s, got %s (%s)\n", role, line,
                     sluice_strerror(want), sluice_strerror(e.code()), e.what());
        std::exit(1);
    }
    std::fprintf(stderr, "[%s] line %d: expected %s, nothing thrown\n", role, line,
                 sluice_strerror(want));
    std::exit(1);
}
#define EXPECT_ERROR(want, ...) expect_error((want), [&] { __VA_ARGS__; }, __LINE__)

enum : uint32_t {
    VALS_DOWN = 1, /* controller -> source, block */
    HITS_DOWN = 2, /* controller -> source, SoA */
    VALS_UP = 3,   /* source -> controller, block */
    HITS_UP = 4,   /* source -> controller, SoA */
    DROPPED = 5,   /* controller -> source, reserved and dropped: always absent */
};

constexpr uint32_t STREAMS = 2;
constexpr uint64_t EVENTS = 8;
constexpr uint64_t N = 4096; /* elements per product: 16 KiB block, 56 KiB SoA */

/* The values of every product, made from the event, the direction and the index. */
uint32_t val(uint64_t ev, uint32_t inst, uint64_t i) { return uint32_t(ev * 100000 + inst * 10000 + i); }
float hx(uint64_t ev, uint32_t inst, uint64_t i) { return float(val(ev, inst, i)) * 0.5f; }
double he(uint64_t ev, uint32_t inst, uint64_t i) { return double(val(ev, inst, i)) * 0.25; }
uint16_t hid(uint64_t ev, uint32_t inst, uint64_t i) { return uint16_t(val(ev, inst, i)); }

struct types {
    sluice::type vals, hits;
};

types add_types(sluice::registry &reg)
{
    types t;
    t.vals = reg.add_block<uint32_t>("cxx::Vals");
    t.hits = reg.add_soa("cxx::HitSoA", { sluice::soa_column<float>("x"),
                                          sluice::soa_column<double>("energy"),
                                          sluice::soa_column<uint16_t>("id") });
    CHECK(t.hits.column_elem_size(0) == 4 && t.hits.column_elem_size(1) == 8 &&
          t.hits.column_elem_size(2) == 2);
    CHECK(reg.find("cxx::Vals")->get() == t.vals.get());
    CHECK(!reg.find("cxx::NoSuchType"));
    return t;
}

void send_vals(sluice::event_token &tok, uint32_t inst, uint64_t ev)
{
    std::vector<uint32_t> v(N);
    for (uint64_t i = 0; i < N; i++)
        v[i] = val(ev, inst, i);
    tok.send<uint32_t>(inst, v);
}

/* Reserve, fill column by column, commit: the zero-copy way. */
void send_hits(sluice::event_token &tok, const types &t, uint32_t inst, uint64_t ev)
{
    sluice::reservation r = tok.reserve(inst, t.hits, N);
    EXPECT_ERROR(SLUICE_ETYPE, r.column<double>(0));   /* x is float */
    EXPECT_ERROR(SLUICE_ETYPE, r.as<float>());         /* not a block type */
    sluice::span<float> x = r.column<float>(0);
    sluice::span<double> e = r.column<double>(1);
    sluice::span<uint16_t> id = r.column<uint16_t>(2);
    CHECK(x.size() == N && e.size() == N && id.size() == N);
    for (uint64_t i = 0; i < N; i++) {
        x[i] = hx(ev, inst, i);
        e[i] = he(ev, inst, i);
        id[i] = hid(ev, inst, i);
    }
    r.commit();
    CHECK(!r);
}

void expect_vals(sluice::event_token &tok, uint32_t inst, uint64_t ev)
{
    std::optional<sluice::view> v = tok.receive(inst);
    CHECK(v && v->count() == N);
    EXPECT_ERROR(SLUICE_ETYPE, v->as<uint16_t>());     /* elements are 4 bytes */
    EXPECT_ERROR(SLUICE_ETYPE, v->column<uint32_t>(0)); /* not an SoA type */
    sluice::span<const uint32_t> got = v->as<uint32_t>();
    CHECK(got.size() == N);
    for (uint64_t i = 0; i < N; i++)
        CHECK(got[i] == val(ev, inst, i));
} /* the view's destructor releases it */

void expect_hits(sluice::event_token &tok, uint32_t inst, uint64_t ev)
{
    std::optional<sluice::view> v = tok.receive(inst);
    CHECK(v && v->count() == N);
    CHECK(std::strcmp(v->product_type().name(), "cxx::HitSoA") == 0);
    EXPECT_ERROR(SLUICE_ETYPE, v->column<float>(1));   /* energy is double */
    EXPECT_ERROR(SLUICE_EINVAL, v->column<float>(3));  /* no such column */
    sluice::span<const float> x = v->column<float>(0);
    sluice::span<const double> e = v->column<double>(1);
    sluice::span<const uint16_t> id = v->column<uint16_t>(2);
    for (uint64_t i = 0; i < N; i++)
        CHECK(x[i] == hx(ev, inst, i) && e[i] == he(ev, inst, i) && id[i] == hid(ev, inst, i));
}

sluice_options_t options()
{
    sluice_options_t o;
    sluice_options_init(&o);
    o.timeout_ms = 20000;     /* generous: 2 cores, sanitizer builds */
    o.arena_bytes = 256 << 10; /* less than four events' products of one stream */
    o.max_sleep_us = 100;
    if (sluice_options_from_env(&o) != SLUICE_OK) /* the job's SLUICE_TRANSPORT still applies */
        std::fprintf(stderr, "[%s] bad SLUICE_* environment: %s\n", role, sluice_last_error());
    return o;
}

sluice_channel_desc_t desc(bool ctrl, const sluice_endpoint_t *eps, size_t n,
                           const sluice_options_t *o)
{
    sluice_channel_desc_t d{};
    d.name = "cxx";
    d.role = ctrl ? SLUICE_CONTROLLER : SLUICE_SOURCE;
    d.peer = ctrl ? "source" : "controller";
    d.streams = STREAMS;
    d.endpoints = eps;
    d.n_endpoints = n;
    d.options = o;
    return d;
}

void controller(sluice::context &ctx)
{
    sluice::registry reg;
    types t = add_types(reg);
    const sluice_endpoint_t eps[] = {
        sluice::sender(VALS_DOWN, t.vals),  sluice::sender(HITS_DOWN, t.hits),
        sluice::receiver(VALS_UP, t.vals), sluice::receiver(HITS_UP, t.hits),
        sluice::sender(DROPPED, t.vals),
    };
    sluice_options_t o = options();
    sluice::channel ch(ctx, desc(true, eps, sizeof eps / sizeof eps[0], &o));

    ch.send(sluice::make_transition(SLUICE_BEGIN_RUN, 1));
    ch.send(sluice::make_transition(SLUICE_BEGIN_LUMI, 1, 1));
    EXPECT_ERROR(SLUICE_EORDER, ch.send(sluice::make_transition(SLUICE_BEGIN_LUMI, 1, 1)));
    for (uint64_t ev = 1; ev <= EVENTS; ev++) {
        sluice::event_token tok =
            ch.send_event(uint32_t(ev % STREAMS), sluice::make_transition(SLUICE_EVENT, 1, 1, ev));
        {
            sluice::reservation dropped = tok.reserve(DROPPED, t.vals, 3);
            EXPECT_ERROR(SLUICE_ETYPE, dropped.as<uint64_t>());      /* elements are 4 bytes */
            EXPECT_ERROR(SLUICE_ETYPE, dropped.column<uint32_t>(0)); /* not an SoA type */
            dropped.as<uint32_t>()[0] = 7;
        } /* cancelled here, before anything behind it can go out */
        std::vector<uint32_t> some(4, 1);
        EXPECT_ERROR(SLUICE_ENOTFOUND, tok.send<uint32_t>(VALS_UP, some)); /* we receive it */
        EXPECT_ERROR(SLUICE_EINVAL, tok.send_bytes(HITS_DOWN, some.data(), 16, N)); /* too few bytes */
        send_vals(tok, VALS_DOWN, ev);
        send_hits(tok, t, HITS_DOWN, ev);
        expect_vals(tok, VALS_UP, ev);
        expect_hits(tok, HITS_UP, ev);
        if (ev % 2 == 0) {
            tok.finish();
            CHECK(!tok);
            EXPECT_ERROR(SLUICE_EALREADY, tok.send_absent(DROPPED)); /* the event is over */
        }
    } /* odd events: the token's destructor finishes them */
    ch.send(sluice::make_transition(SLUICE_END_LUMI, 1, 1));
    ch.send(sluice::make_transition(SLUICE_END_RUN, 1));
    ch.send(sluice::make_transition(SLUICE_END_JOB, 1));
    sluice_channel_stats_t s = ch.stats();
    CHECK(s.products_sent == 2 * EVENTS && s.products_received == 2 * EVENTS);
    ch.close();
    EXPECT_ERROR(SLUICE_EALREADY, ch.close());
}

void expect_transition(sluice::channel &ch, sluice_transition_kind_t kind, uint32_t lumi)
{
    std::optional<sluice_transition_t> tr = ch.next_transition();
    CHECK(tr && tr->kind == kind && tr->run == 1 && tr->lumi == lumi);
}

void source(sluice::context &ctx)
{
    sluice::registry reg;
    types t = add_types(reg);
    const sluice_endpoint_t eps[] = {
        sluice::receiver(VALS_DOWN, t.vals), sluice::receiver(HITS_DOWN, t.hits),
        sluice::sender(VALS_UP, t.vals),     sluice::sender(HITS_UP, t.hits),
        sluice::receiver(DROPPED, t.vals),
    };
    sluice_options_t o = options();
    sluice::channel ch(ctx, desc(false, eps, sizeof eps / sizeof eps[0], &o));

    expect_transition(ch, SLUICE_BEGIN_RUN, 0);
    expect_transition(ch, SLUICE_BEGIN_LUMI, 1);
    for (uint64_t ev = 1; ev <= EVENTS; ev++) {
        std::optional<sluice::event> e = ch.next_event(uint32_t(ev % STREAMS));
        CHECK(e && e->transition.kind == SLUICE_EVENT && e->transition.event == ev);
        CHECK(e->token.stream() == ev % STREAMS);
        expect_vals(e->token, VALS_DOWN, ev);
        expect_hits(e->token, HITS_DOWN, ev);
        send_vals(e->token, VALS_UP, ev);
        send_hits(e->token, t, HITS_UP, ev);
        /* The controller's dropped reservation: absent once its event ends. */
        CHECK(!e->token.receive(DROPPED));
        if (ev % 2 == 0)
            e->token.finish();
    } /* odd events: the token's destructor finishes them */
    expect_transition(ch, SLUICE_END_LUMI, 1);
    expect_transition(ch, SLUICE_END_RUN, 0);
    expect_transition(ch, SLUICE_END_JOB, 0);
    CHECK(!ch.next_transition()); /* end of job */
    CHECK(ch.stats().discarded == 0);
    ch.close();
}

} // namespace

int main(int argc, char **argv)
{
    /* osc/pt2pt refuses MPI_THREAD_MULTIPLE: its configuration asks for less. */
    const char *lvl = std::getenv("SLUICE_TEST_MPI_THREADS");
    int want = lvl && !std::strcmp(lvl, "serialized") ? MPI_THREAD_SERIALIZED : MPI_THREAD_MULTIPLE;
    int provided;
    MPI_Init_thread(&argc, &argv, want, &provided);
    if (argc < 2 || (std::strcmp(argv[1], "controller") && std::strcmp(argv[1], "source"))) {
        std::fprintf(stderr, "usage: cxx controller|source\n");
        MPI_Finalize();
        return 2;
    }
    role = argv[1];
    int rc = 0;
    try {
        sluice::context ctx(MPI_COMM_WORLD, role);
        if (!std::strcmp(role, "controller"))
            controller(ctx);
        else
            source(ctx);
        std::printf("[%s] cxx: ok\n", role);
    } catch (const sluice::error &e) {
        std::fprintf(stderr, "[%s] unexpected sluice::error %d: %s\n", role, e.code(), e.what());
        rc = 1;
    }
    MPI_Finalize();
    return rc;
}
