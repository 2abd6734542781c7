/* SPDX-License-Identifier: MIT */
/* sluice for C++17: owners, views, reservations and event tokens over the C API, header only. */
#ifndef SLUICE_SLUICE_HPP
#define SLUICE_SLUICE_HPP

/*
 * Nothing here adds behaviour: each method calls the C function it names,
 * and the comments of include/sluice/sluice.h, types.h and group.h stay the
 * reference for what a call does, how long it may wait and which thread may
 * call it. What this header adds:
 *
 * Ownership. context, registry, channel and group own their C handle and
 * free it in their destructor; view, reservation and event_token own one
 * view, one reservation, one unfinished event and give it back in theirs
 * (release, cancel, finish). All are move-only; a moved-from object holds
 * nothing and may only be destroyed or assigned to. Destroy in the C order:
 * tokens, views and reservations before their channel; groups before their
 * channels; channels before their context and before the registry whose
 * types they use. Declaring them in that order (context, registry, channel,
 * then the rest) makes scope exit do it.
 *
 * Errors. Every wrapper of a C call throws sluice::error, with the status
 * and sluice_last_error(), for any status but SLUICE_OK, except the
 * expected outcomes it names, which it returns instead:
 *   SLUICE_EOF        next_transition, next_event, next_item, group::next: std::nullopt
 *   SLUICE_ABSENT     event_token::receive: std::nullopt
 *   SLUICE_EAGAIN     the try_ methods (SLUICE_NONBLOCK): false or std::nullopt
 *   SLUICE_ENOTFOUND  registry::find, channel::transition_token: std::nullopt
 * Destructors never throw: the status of the C call they make is dropped.
 * Call close(), finish(), commit() or release() explicitly to see it.
 *
 * Blocking and threads. A method without try_ waits as its C call with
 * flags 0 does (bounded: past the channel's timeout_ms it throws
 * SLUICE_ETIMEDOUT); a destructor that finishes an event may wait the same
 * way. Which threads may call is what the C header says for that call. The
 * C++ objects add no lock: use each from one thread at a time, except
 * event_token, whose product calls (send, reserve, receive) may come from
 * several threads at once, as the C calls may.
 */

/*
 * Open MPI and MPICH still ship MPI's C++ bindings (removed in MPI-3.0) and
 * pull them into C++ code that includes mpi.h, where they need a library of
 * their own (libmpi_cxx). sluice uses the C API only.
 */
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif

/*
 * The C headers name a few functions after the struct they fill
 * (sluice_channel_stats, sluice_group_stats, ...): valid C and C++, but
 * C++'s -Wshadow reports each. Quiet it for them only.
 */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#endif
#include <sluice/group.h>
#include <sluice/sluice.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace sluice {

/* ------------------------------------------------------------------ errors */

/*
 * A failed call: code() is the sluice status (negative, or a positive one
 * that the call did not expect), what() names the call, the status
 * (sluice_strerror) and the detailed message (sluice_last_error).
 */
class error : public std::runtime_error {
public:
    error(int code, const std::string &what) : std::runtime_error(what), code_(code) {}
    int code() const noexcept { return code_; }

private:
    int code_;
};

namespace detail {

/* Throws for a failure found by this header: "<where>: <status>: <message>". */
[[noreturn]] inline void fail(int status, const char *where, const std::string &message)
{
    throw error(status, std::string(where) + ": " + sluice_strerror(status) + ": " + message);
}

/* Throws for a C call's status. sluice_last_error is read at once, before
 * any other sluice call of this thread can replace it. */
inline void check(int status, const char *call)
{
    if (status == SLUICE_OK)
        return;
    std::string what = std::string(call) + ": " + sluice_strerror(status);
    const char *detail = sluice_last_error();
    if (detail && *detail)
        what += std::string(": ") + detail;
    throw error(status, what);
}

} // namespace detail

/* -------------------------------------------------------------------- span */

/*
 * A pointer and an element count, like C++20's std::span<T>: it owns
 * nothing, and is valid as long as what it points into (a view, a
 * reservation, a container).
 */
template <class T>
class span {
public:
    constexpr span() noexcept = default;
    constexpr span(T *data, std::size_t size) noexcept : data_(data), size_(size) {}
    template <std::size_t N>
    constexpr span(T (&array)[N]) noexcept : data_(array), size_(N) {}
    /* A contiguous container (std::vector, std::array, ...) of elements that convert. */
    template <class C, class E = std::remove_pointer_t<decltype(std::declval<C &>().data())>,
              class = std::enable_if_t<std::is_convertible_v<E (*)[], T (*)[]>>>
    constexpr span(C &container) noexcept : data_(container.data()), size_(container.size())
    {
    }
    /* span<T> to span<const T>. */
    template <class U, class = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
    constexpr span(span<U> other) noexcept : data_(other.data()), size_(other.size())
    {
    }

    constexpr T *data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }
    constexpr std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
    constexpr bool empty() const noexcept { return size_ == 0; }
    constexpr T &operator[](std::size_t i) const noexcept { return data_[i]; }
    constexpr T *begin() const noexcept { return data_; }
    constexpr T *end() const noexcept { return data_ + size_; }

private:
    T *data_ = nullptr;
    std::size_t size_ = 0;
};

/* ------------------------------------------------------------------- types */

/*
 * A product type of a registry. Does not own it: valid until the registry is
 * destroyed. Any thread (types do not change once added).
 */
class type {
public:
    type() noexcept = default;
    explicit type(const sluice_type_t *t) noexcept : t_(t) {}

    const sluice_type_t *get() const noexcept { return t_; }
    const char *name() const { return sluice_type_name(t_); }
    uint64_t fingerprint() const { return sluice_type_fingerprint(t_); }
    sluice_layout_t layout() const { return sluice_type_layout(t_); }

    /* Bytes of a product of `count` elements (block and SoA). */
    std::size_t bytes(uint64_t count) const
    {
        std::size_t n = 0;
        detail::check(sluice_type_bytes(t_, count, &n), "sluice_type_bytes");
        return n;
    }

    /* Byte offset of SoA column `column` in a product of `count` elements. */
    std::size_t column_offset(uint32_t column, uint64_t count) const
    {
        std::size_t off = 0;
        detail::check(sluice_type_column_offset(t_, count, column, &off),
                      "sluice_type_column_offset");
        return off;
    }

    /*
     * Bytes per element of SoA column `column`. types.h has no call that
     * returns it, so it is measured: with a count that is a multiple of every
     * column's alignment (at most 4096, types.c), no column is padded, and
     * the next column starts (or the product ends) exactly count * elem_size
     * bytes after this one. Asking for the column after the last fails
     * inside the C library, which leaves sluice_last_error() naming it.
     */
    std::size_t column_elem_size(uint32_t column) const
    {
        constexpr uint64_t n = 4096;
        std::size_t start = column_offset(column, n), next = 0;
        if (sluice_type_column_offset(t_, n, column + 1, &next) != SLUICE_OK)
            next = bytes(n); /* `column` is the last one */
        return (next - start) / n;
    }

private:
    const sluice_type_t *t_ = nullptr;
};

/* An SoA column whose elements are T. */
template <class T>
sluice_column_t soa_column(const char *name) noexcept
{
    static_assert(std::is_trivially_copyable_v<T>, "SoA elements are copied as bytes");
    return sluice_column_t{ name, uint32_t(sizeof(T)), uint32_t(alignof(T)) };
}

namespace detail {

struct registry_free {
    void operator()(sluice_registry_t *r) const noexcept { sluice_registry_destroy(r); }
};

/* The checks of typed access to a product (view or reservation): its type is
 * BLOCK with elements of sizeof(T) bytes, or SoA with such a column; the
 * region holds `count` of them; the address suits T. Returns the column's
 * byte offset (0 for a block). */
template <class T>
std::size_t typed_offset(const char *where, const sluice_type_t *t, sluice_layout_t want,
                         uint32_t column, const void *data, std::size_t bytes, uint64_t count)
{
    static_assert(std::is_trivially_copyable_v<T>, "products are read and written as bytes");
    if (!t)
        fail(SLUICE_EINVAL, where, "no type is known for this product (reserve_bytes)");
    type ty(t);
    if (ty.layout() != want)
        fail(SLUICE_ETYPE, where,
             std::string("type \"") + ty.name() + "\" is not a " +
                 (want == SLUICE_LAYOUT_SOA ? "Structure-of-Arrays" : "block") + " type");
    std::size_t elem = want == SLUICE_LAYOUT_SOA ? ty.column_elem_size(column) : ty.bytes(1);
    if (elem != sizeof(T))
        fail(SLUICE_ETYPE, where,
             std::string("type \"") + ty.name() + "\"" +
                 (want == SLUICE_LAYOUT_SOA ? " column " + std::to_string(column) : "") +
                 " has " + std::to_string(elem) + "-byte elements, not " +
                 std::to_string(sizeof(T)));
    std::size_t off = want == SLUICE_LAYOUT_SOA ? ty.column_offset(column, count) : 0;
    /* The C library checked that sluice_type_bytes(count) fits; this only
     * keeps a span from reaching past the region whatever happened. */
    if (off > bytes || count > (bytes - off) / sizeof(T))
        fail(SLUICE_ERANGE, where,
             std::to_string(count) + " elements do not fit in " + std::to_string(bytes) + " bytes");
    if (reinterpret_cast<std::uintptr_t>(static_cast<const char *>(data) + off) % alignof(T))
        fail(SLUICE_ETYPE, where,
             std::string("type \"") + ty.name() + "\" is not aligned for a " +
                 std::to_string(alignof(T)) + "-byte aligned element");
    return off;
}

} // namespace detail

/*
 * A registry of product types (sluice_registry_create / _destroy). Its
 * types live until it is destroyed: after every channel that uses them is
 * closed. Any number of threads may add and find types at once.
 */
class registry {
public:
    registry()
    {
        sluice_registry_t *r = nullptr;
        detail::check(sluice_registry_create(&r), "sluice_registry_create");
        r_.reset(r);
    }

    sluice_registry_t *get() const noexcept { return r_.get(); }

    /* Add a type (`desc.size` is filled in); the same name and layout again returns it. */
    type add(sluice_type_desc_t desc)
    {
        desc.size = sizeof desc;
        const sluice_type_t *t = nullptr;
        detail::check(sluice_registry_add(r_.get(), &desc, &t), "sluice_registry_add");
        return type(t);
    }

    /* A block type whose elements are T. */
    template <class T>
    type add_block(const char *name)
    {
        static_assert(std::is_trivially_copyable_v<T>, "block elements are copied as bytes");
        sluice_type_desc_t d{};
        d.name = name;
        d.layout = SLUICE_LAYOUT_BLOCK;
        d.elem_size = uint32_t(sizeof(T));
        d.align = uint32_t(alignof(T));
        return add(d);
    }

    /* A Structure-of-Arrays type, e.g. add_soa("hits", {soa_column<float>("x"), ...}). */
    type add_soa(const char *name, std::initializer_list<sluice_column_t> columns)
    {
        sluice_type_desc_t d{};
        d.name = name;
        d.layout = SLUICE_LAYOUT_SOA;
        d.columns = columns.begin();
        d.n_columns = uint32_t(columns.size());
        return add(d);
    }

    /* The type named `name`; std::nullopt if there is none (SLUICE_ENOTFOUND). */
    [[nodiscard]] std::optional<type> find(const char *name) const
    {
        const sluice_type_t *t = nullptr;
        int rc = sluice_registry_find(r_.get(), name, &t);
        if (rc == SLUICE_ENOTFOUND)
            return std::nullopt;
        detail::check(rc, "sluice_registry_find");
        return type(t);
    }

private:
    std::unique_ptr<sluice_registry_t, detail::registry_free> r_;
};

/* Endpoints of a channel descriptor (C++17 has no designated initialisers). */
inline sluice_endpoint_t sender(uint32_t instance, type t,
                                sluice_memory_t memory = SLUICE_MEMORY_HOST) noexcept
{
    return sluice_endpoint_t{ instance, SLUICE_SEND, t.get(), memory };
}
inline sluice_endpoint_t receiver(uint32_t instance, type t,
                                  sluice_memory_t memory = SLUICE_MEMORY_HOST) noexcept
{
    return sluice_endpoint_t{ instance, SLUICE_RECEIVE, t.get(), memory };
}

/* A transition with every other field zero (no timestamp, history or aux). */
inline sluice_transition_t make_transition(sluice_transition_kind_t kind, uint32_t run,
                                           uint32_t lumi = 0, uint64_t event = 0) noexcept
{
    sluice_transition_t t{};
    t.kind = kind;
    t.run = run;
    t.lumi = lumi;
    t.event = event;
    return t;
}

/* ------------------------------------------------------------------- views */

/*
 * A received product, read in place: owns the hold on its arena region and
 * releases it (sluice_view_release) when destroyed. Release it before the
 * channel closes. Any thread may release it, one at a time; the data may be
 * read by several threads at once.
 */
class view {
public:
    view() noexcept = default;
    /* Takes over `v`, received on `ch`. */
    view(sluice_channel_t *ch, const sluice_view_t &v) noexcept : ch_(ch), v_(v) {}
    ~view() { reset(); }
    view(view &&other) noexcept : ch_(std::exchange(other.ch_, nullptr)), v_(other.v_) {}
    view &operator=(view &&other) noexcept
    {
        if (this != &other) {
            reset();
            ch_ = std::exchange(other.ch_, nullptr);
            v_ = other.v_;
        }
        return *this;
    }
    view(const view &) = delete;
    view &operator=(const view &) = delete;

    /* Whether it still holds a product. */
    explicit operator bool() const noexcept { return ch_ != nullptr; }

    /* Release now, seeing the status; the view is empty afterwards either way. */
    void release()
    {
        sluice_channel_t *ch = std::exchange(ch_, nullptr);
        if (!ch)
            detail::fail(SLUICE_EALREADY, "sluice::view::release", "the view holds nothing");
        detail::check(sluice_view_release(ch, &v_), "sluice_view_release");
    }

    const void *data() const noexcept { return v_.data; }
    std::size_t size_bytes() const noexcept { return v_.bytes; }
    /* The element count the sender gave. */
    uint64_t count() const noexcept { return v_.count; }
    type product_type() const noexcept { return type(v_.type); }
    const sluice_view_t *get() const noexcept { return &v_; }

    /* The product's bytes. */
    span<const std::byte> bytes() const noexcept
    {
        return span<const std::byte>(static_cast<const std::byte *>(v_.data), v_.bytes);
    }

    /* The elements of a block product; SLUICE_ETYPE unless they are sizeof(T) bytes. */
    template <class T>
    span<const T> as() const
    {
        detail::typed_offset<T>("sluice::view::as", v_.type, SLUICE_LAYOUT_BLOCK, 0, v_.data,
                                v_.bytes, v_.count);
        return span<const T>(static_cast<const T *>(v_.data), std::size_t(v_.count));
    }

    /* Column `i` of an SoA product; SLUICE_ETYPE unless its elements are sizeof(T) bytes. */
    template <class T>
    span<const T> column(uint32_t i) const
    {
        std::size_t off = detail::typed_offset<T>("sluice::view::column", v_.type,
                                                  SLUICE_LAYOUT_SOA, i, v_.data, v_.bytes,
                                                  v_.count);
        return span<const T>(
            reinterpret_cast<const T *>(static_cast<const char *>(v_.data) + off),
            std::size_t(v_.count));
    }

    /* Rebuild a custom-layout object (sluice_view_deserialise). */
    void deserialise(void *object) const
    {
        detail::check(sluice_view_deserialise(&v_, object), "sluice_view_deserialise");
    }

private:
    void reset() noexcept
    {
        if (ch_)
            (void)sluice_view_release(std::exchange(ch_, nullptr), &v_);
    }

    sluice_channel_t *ch_ = nullptr;
    sluice_view_t v_{};
};

/* ------------------------------------------------------------ reservations */

/*
 * A region reserved in the receiver's arena: write it, then commit().
 * Destroyed while still open, it cancels itself (sluice_product_cancel:
 * nothing is published; a receiver asking for the product after the event
 * is finished without it gets it absent). A commit that throws leaves it
 * open, so it is cancelled then too. Finishing the event cancels it as
 * well: then do not write it any more. One thread at a time.
 */
class reservation {
public:
    reservation() noexcept = default;
    /* Takes over `res`, made on the event `token` names; `t` (may be NULL) is its type. */
    reservation(const sluice_token_t &token, const sluice_reservation_t &res,
                const sluice_type_t *t) noexcept
        : tok_(token), res_(res), type_(t), open_(true)
    {
    }
    ~reservation() { reset(); }
    reservation(reservation &&other) noexcept
        : tok_(other.tok_), res_(other.res_), type_(other.type_),
          open_(std::exchange(other.open_, false))
    {
    }
    reservation &operator=(reservation &&other) noexcept
    {
        if (this != &other) {
            reset();
            tok_ = other.tok_;
            res_ = other.res_;
            type_ = other.type_;
            open_ = std::exchange(other.open_, false);
        }
        return *this;
    }
    reservation(const reservation &) = delete;
    reservation &operator=(const reservation &) = delete;

    /* Whether it is still open (neither committed nor cancelled). */
    explicit operator bool() const noexcept { return open_; }

    void *data() const noexcept { return res_.data; }
    std::size_t size_bytes() const noexcept { return res_.bytes; }
    uint64_t count() const noexcept { return res_.count; }
    span<std::byte> bytes() const noexcept
    {
        return span<std::byte>(static_cast<std::byte *>(res_.data), res_.bytes);
    }

    /* The elements of a block product, to fill; SLUICE_ETYPE unless sizeof(T) bytes each. */
    template <class T>
    span<T> as() const
    {
        detail::typed_offset<T>("sluice::reservation::as", type_, SLUICE_LAYOUT_BLOCK, 0,
                                res_.data, res_.bytes, res_.count);
        return span<T>(static_cast<T *>(res_.data), std::size_t(res_.count));
    }

    /* Column `i` of an SoA product, to fill; SLUICE_ETYPE unless sizeof(T) bytes each. */
    template <class T>
    span<T> column(uint32_t i) const
    {
        std::size_t off = detail::typed_offset<T>("sluice::reservation::column", type_,
                                                  SLUICE_LAYOUT_SOA, i, res_.data, res_.bytes,
                                                  res_.count);
        return span<T>(reinterpret_cast<T *>(static_cast<char *>(res_.data) + off),
                       std::size_t(res_.count));
    }

    /* Publish it (sluice_product_commit); do not touch the data afterwards. Never waits. */
    void commit()
    {
        detail::check(sluice_product_commit(&tok_, &res_), "sluice_product_commit");
        open_ = false;
    }

    /* Drop it without publishing anything (sluice_product_cancel). */
    void cancel()
    {
        open_ = false;
        detail::check(sluice_product_cancel(&tok_, &res_), "sluice_product_cancel");
    }

private:
    void reset() noexcept
    {
        if (std::exchange(open_, false))
            (void)sluice_product_cancel(&tok_, &res_);
    }

    sluice_token_t tok_{}; /* a copy: a token only names (channel, stream, event) */
    sluice_reservation_t res_{};
    const sluice_type_t *type_ = nullptr;
    bool open_ = false;
};

/* ------------------------------------------------------------------ events */

/*
 * An unfinished event (or a run/lumi transition's scope) on one side: the
 * owner of its sluice_token_t. Destroyed unfinished, it finishes the event
 * (sluice_event_finish, which may wait, bounded, for a ring slot). finish()
 * and fail() end it explicitly; release() hands the token to C code.
 * Product calls may come from several threads at once; finish, fail,
 * release, moving and destroying from one, after the others returned.
 */
class event_token {
public:
    /* Holds no event (a global transition without products, a moved-from token). */
    event_token() noexcept = default;
    /* Takes over the unfinished event `token` names. */
    explicit event_token(const sluice_token_t &token) noexcept : tok_(token), open_(true) {}
    ~event_token() { reset(); }
    event_token(event_token &&other) noexcept
        : tok_(std::exchange(other.tok_, sluice_token_t{})), open_(std::exchange(other.open_, false))
    {
    }
    event_token &operator=(event_token &&other) noexcept
    {
        if (this != &other) {
            reset();
            tok_ = std::exchange(other.tok_, sluice_token_t{});
            open_ = std::exchange(other.open_, false);
        }
        return *this;
    }
    event_token(const event_token &) = delete;
    event_token &operator=(const event_token &) = delete;

    /* Whether it holds an event it has not finished yet. */
    explicit operator bool() const noexcept { return open_; }
    uint32_t stream() const noexcept { return tok_.stream; }
    /* The stream's event sequence number. */
    uint64_t seq() const noexcept { return tok_.seq; }
    /* The C token, for the calls this header leaves out (notifications, objects). */
    sluice_token_t *get() noexcept { return &tok_; }

    /* Stop owning the event: the caller finishes it with the C calls. */
    sluice_token_t release() noexcept
    {
        open_ = false;
        return std::exchange(tok_, sluice_token_t{});
    }

    /*
     * Finish the event (sluice_event_finish). After SLUICE_ETIMEDOUT or
     * SLUICE_EAGAIN it stays open (call again, or let the destructor try);
     * after any other status it is finished here.
     */
    void finish()
    {
        int rc = sluice_event_finish(token("sluice::event_token::finish"));
        if (rc != SLUICE_ETIMEDOUT && rc != SLUICE_EAGAIN)
            open_ = false;
        detail::check(rc, "sluice_event_finish");
    }

    /* Fail the event with a negative `status` and a message (sluice_event_fail); finishes it. */
    void fail(int status, const char *message)
    {
        int rc = sluice_event_fail(token("sluice::event_token::fail"), status, message);
        if (rc != SLUICE_ETIMEDOUT && rc != SLUICE_EAGAIN && rc != SLUICE_EINVAL)
            open_ = false;
        detail::check(rc, "sluice_event_fail");
    }

    /*
     * Send a block product of elements.size() elements (sluice_product_send:
     * one copy). This side's type for `instance` is not known here, so T is
     * not checked against it: the receiver's view.as<T>() is.
     */
    template <class T>
    void send(uint32_t instance, span<const T> elements)
    {
        send_flags(instance, elements.data(), elements.size_bytes(), elements.size(), 0);
    }
    /* The same without waiting: false if there is no room now (SLUICE_EAGAIN). */
    template <class T>
    [[nodiscard]] bool try_send(uint32_t instance, span<const T> elements)
    {
        return send_flags(instance, elements.data(), elements.size_bytes(), elements.size(),
                          SLUICE_NONBLOCK);
    }
    /* Send `bytes` bytes as a product of `count` elements (any layout but custom). */
    void send_bytes(uint32_t instance, const void *data, std::size_t bytes, uint64_t count)
    {
        send_flags(instance, data, bytes, count, 0);
    }

    /* Tell the receiver the product is absent for this event. */
    void send_absent(uint32_t instance)
    {
        detail::check(sluice_product_send_absent(token("sluice::event_token::send_absent"),
                                                 instance),
                      "sluice_product_send_absent");
    }

    /*
     * Reserve room for a product of `count` elements of type `t` (the type
     * this side declared for `instance`: the C library does not check it
     * here), waiting for room. Fill it through column<T>() or as<T>().
     */
    reservation reserve(uint32_t instance, type t, uint64_t count)
    {
        return *reserve_flags(instance, t.get(), t.bytes(count), count, 0);
    }
    /* The same without waiting: std::nullopt if there is no room now (SLUICE_EAGAIN). */
    [[nodiscard]] std::optional<reservation> try_reserve(uint32_t instance, type t,
                                                         uint64_t count)
    {
        return reserve_flags(instance, t.get(), t.bytes(count), count, SLUICE_NONBLOCK);
    }
    /* Reserve `bytes` bytes, untyped (custom layouts; as<T> and column<T> then throw). */
    reservation reserve_bytes(uint32_t instance, std::size_t bytes, uint64_t count)
    {
        return *reserve_flags(instance, nullptr, bytes, count, 0);
    }

    /*
     * Receive the next product of `instance` of this event, waiting
     * (bounded) for it; std::nullopt if it is absent (SLUICE_ABSENT: marked
     * so, or the sender finished the event without it). To wait without a
     * thread, arm sluice_notify_product(get(), ...) first: once it fired this
     * call does not wait.
     */
    [[nodiscard]] std::optional<view> receive(uint32_t instance)
    {
        sluice_view_t v;
        int rc = sluice_product_receive(token("sluice::event_token::receive"), instance, 0, &v);
        if (rc == SLUICE_ABSENT)
            return std::nullopt;
        detail::check(rc, "sluice_product_receive");
        return view(tok_.channel, v);
    }

private:
    /* The C token; an empty event_token would hand the C call a NULL channel. */
    sluice_token_t *token(const char *where)
    {
        if (!tok_.channel)
            detail::fail(SLUICE_EINVAL, where, "the token holds no event");
        return &tok_;
    }

    bool send_flags(uint32_t instance, const void *data, std::size_t bytes, uint64_t count,
                    unsigned flags)
    {
        int rc = sluice_product_send(token("sluice::event_token::send"), instance, data, bytes,
                                     count, flags);
        if (rc == SLUICE_EAGAIN && (flags & SLUICE_NONBLOCK))
            return false;
        detail::check(rc, "sluice_product_send");
        return true;
    }

    std::optional<reservation> reserve_flags(uint32_t instance, const sluice_type_t *t,
                                             std::size_t bytes, uint64_t count, unsigned flags)
    {
        sluice_reservation_t res;
        int rc = sluice_product_reserve(token("sluice::event_token::reserve"), instance, bytes,
                                        count, flags, &res);
        if (rc == SLUICE_EAGAIN && (flags & SLUICE_NONBLOCK))
            return std::nullopt;
        detail::check(rc, "sluice_product_reserve");
        return reservation(tok_, res, t);
    }

    void reset() noexcept
    {
        if (std::exchange(open_, false))
            (void)sluice_event_finish(&tok_);
    }

    sluice_token_t tok_{};
    bool open_ = false;
};

/* An event a source took (channel::next_event). */
struct event {
    sluice_transition_t transition;
    event_token token;
};

/* What comes next on a source (channel::next_item, sluice_item_t). */
struct item {
    sluice_transition_t transition; /* transition.kind says which */
    uint32_t stream;                /* SLUICE_EVENT: its stream; otherwise UINT32_MAX */
    event_token token;              /* the event, or the transition's scope; else empty */
};

/* ---------------------------------------------------------------- contexts */

namespace detail {
struct context_free {
    void operator()(sluice_context_t *c) const noexcept { sluice_context_destroy(c); }
};
struct channel_close {
    void operator()(sluice_channel_t *ch) const noexcept { (void)sluice_channel_close(ch); }
};
struct group_free {
    void operator()(sluice_group_t *g) const noexcept { sluice_group_destroy(g); }
};
} // namespace detail

/*
 * This process's context over a communicator (sluice_context_create,
 * collective over `comm`: blocks until every rank called it). Destroyed
 * (not collective) after its channels are closed. The caller owns
 * MPI_Init and MPI_Finalize: destroy the context before finalising.
 */
class context {
public:
    context(MPI_Comm comm, const char *name)
    {
        sluice_context_t *c = nullptr;
        detail::check(sluice_context_create(comm, name, &c), "sluice_context_create");
        c_.reset(c);
    }

    sluice_context_t *get() const noexcept { return c_.get(); }
    int rank() const { return sluice_context_rank(c_.get()); }
    int size() const { return sluice_context_size(c_.get()); }
    /* The context's own duplicate of its communicator; do not free it. */
    MPI_Comm comm() const { return sluice_context_comm(c_.get()); }

private:
    std::unique_ptr<sluice_context_t, detail::context_free> c_;
};

/* ---------------------------------------------------------------- channels */

/*
 * One side of a channel (sluice_channel_open): blocks until both sides
 * opened and agreed, or throws (SLUICE_ETYPE when the declarations
 * disagree, SLUICE_ETIMEDOUT, ...). The destructor closes it, dropping the
 * status; close() shows it. Close after every other call on it returned
 * and every token, view and reservation of it is gone.
 */
class channel {
public:
    /* `desc.size` is filled in; `desc`, its endpoints' types and options as in sluice.h. */
    channel(context &ctx, sluice_channel_desc_t desc)
    {
        desc.size = sizeof desc;
        sluice_channel_t *ch = nullptr;
        detail::check(sluice_channel_open(ctx.get(), &desc, &ch), "sluice_channel_open");
        ch_.reset(ch);
    }

    sluice_channel_t *get() const noexcept { return ch_.get(); }
    /* "shm" or "rma". */
    const char *transport() const { return sluice_channel_transport(ch_.get()); }
    /* "shm", "rma/pt2pt", "rma/rdma", ...: sluice_channel_path. */
    const char *path() const { return sluice_channel_path(ch_.get()); }
    /* "ipc", "staged" or "none": sluice_channel_device_path. */
    const char *device_path() const { return sluice_channel_device_path(ch_.get()); }
    sluice_channel_stats_t stats() const
    {
        sluice_channel_stats_t s;
        sluice_channel_stats(ch_.get(), &s);
        return s;
    }

    /*
     * Close (sluice_channel_close; over RMA it agrees with the peer, bounded
     * by timeout_ms). The channel is freed whatever the status; throws for
     * any but SLUICE_OK (SLUICE_ETIMEDOUT: the peer did not come).
     */
    void close()
    {
        if (!ch_)
            detail::fail(SLUICE_EALREADY, "sluice::channel::close", "the channel is not open");
        detail::check(sluice_channel_close(ch_.release()), "sluice_channel_close");
    }

    /* Controller: publish a global transition (not an event); any thread, serialised. */
    void send(const sluice_transition_t &t) { send_flags(t, 0); }
    /* The same without waiting: false if the global ring is full (SLUICE_EAGAIN). */
    [[nodiscard]] bool try_send(const sluice_transition_t &t)
    {
        return send_flags(t, SLUICE_NONBLOCK);
    }

    /* Controller: publish an event on `stream` (its previous token finished); one thread per stream. */
    event_token send_event(uint32_t stream, const sluice_transition_t &event)
    {
        return *send_event_flags(stream, event, 0);
    }
    /* The same without waiting: std::nullopt if the stream's ring is full (SLUICE_EAGAIN). */
    [[nodiscard]] std::optional<event_token> try_send_event(uint32_t stream,
                                                            const sluice_transition_t &event)
    {
        return send_event_flags(stream, event, SLUICE_NONBLOCK);
    }

    /* Controller: publish a run or lumi transition with a scope that carries products. */
    event_token send_scoped(const sluice_transition_t &t)
    {
        sluice_token_t tok;
        detail::check(sluice_transition_send_scoped(ch_.get(), &t, 0, &tok),
                      "sluice_transition_send_scoped");
        return event_token(tok);
    }

    /* Source: the next global transition; std::nullopt after END_JOB (SLUICE_EOF). One thread. */
    [[nodiscard]] std::optional<sluice_transition_t> next_transition()
    {
        sluice_transition_t t;
        int rc = sluice_transition_next(ch_.get(), &t, 0);
        if (rc == SLUICE_EOF)
            return std::nullopt;
        detail::check(rc, "sluice_transition_next");
        return t;
    }

    /* Source: the scope of the transition delivered last; std::nullopt if it has none. */
    [[nodiscard]] std::optional<event_token> transition_token()
    {
        sluice_token_t tok;
        int rc = sluice_transition_token(ch_.get(), &tok);
        if (rc == SLUICE_ENOTFOUND)
            return std::nullopt;
        detail::check(rc, "sluice_transition_token");
        return event_token(tok);
    }

    /* Source: the next event of `stream`; std::nullopt at end of job. One thread per stream. */
    [[nodiscard]] std::optional<event> next_event(uint32_t stream)
    {
        sluice_transition_t t;
        sluice_token_t tok;
        int rc = sluice_event_next(ch_.get(), stream, &t, 0, &tok);
        if (rc == SLUICE_EOF)
            return std::nullopt;
        detail::check(rc, "sluice_event_next");
        return event{ t, event_token(tok) };
    }

    /*
     * Source: what comes next, transition or event (sluice_source_next);
     * std::nullopt after END_JOB. Not mixed with next_transition or
     * next_event on one channel; one thread. To wait without a thread, arm
     * sluice_notify_item(get(), ...) first.
     */
    [[nodiscard]] std::optional<item> next_item()
    {
        sluice_item_t it;
        int rc = sluice_source_next(ch_.get(), 0, &it);
        if (rc == SLUICE_EOF)
            return std::nullopt;
        detail::check(rc, "sluice_source_next");
        return item{ it.transition, it.stream,
                     it.token.channel ? event_token(it.token) : event_token() };
    }

private:
    bool send_flags(const sluice_transition_t &t, unsigned flags)
    {
        int rc = sluice_transition_send(ch_.get(), &t, flags);
        if (rc == SLUICE_EAGAIN && (flags & SLUICE_NONBLOCK))
            return false;
        detail::check(rc, "sluice_transition_send");
        return true;
    }

    std::optional<event_token> send_event_flags(uint32_t stream, const sluice_transition_t &t,
                                                unsigned flags)
    {
        sluice_token_t tok;
        int rc = sluice_event_send(ch_.get(), stream, &t, flags, &tok);
        if (rc == SLUICE_EAGAIN && (flags & SLUICE_NONBLOCK))
            return std::nullopt;
        detail::check(rc, "sluice_event_send");
        return event_token(tok);
    }

    std::unique_ptr<sluice_channel_t, detail::channel_close> ch_;
};

/* ------------------------------------------------------------------ groups */

/* What a source group's next call returned (group::next). */
struct group_item {
    std::size_t member; /* the member it came from */
    /* SLUICE_OK, or SLUICE_EPEERCLOSED / SLUICE_EPEERDEAD: the member is gone
     * (reported once; remove it, then close its channel) and `it` is empty. */
    int lost;
    item it;
};

/*
 * A group of channels of one role (sluice_group_create; group.h). Owns no
 * channel: it is destroyed (sluice_group_destroy) before its channels
 * close. Once a channel is a member, send its transitions and events
 * (controller) or take its items (source) through the group only.
 */
class group {
public:
    /* Copies `desc` and its member list; `desc.size` is filled in. Not collective. */
    explicit group(sluice_group_desc_t desc)
    {
        desc.size = sizeof desc;
        sluice_group_t *g = nullptr;
        detail::check(sluice_group_create(&desc, &g), "sluice_group_create");
        g_.reset(g);
    }

    sluice_group_t *get() const noexcept { return g_.get(); }

    /* Source groups: add an open channel in no group; returns its member index. */
    std::size_t add(channel &ch)
    {
        std::size_t member = 0;
        detail::check(sluice_group_add(g_.get(), ch.get(), &member), "sluice_group_add");
        return member;
    }
    /* Source groups: remove a member, before closing its channel. */
    void remove(channel &ch)
    {
        detail::check(sluice_group_remove(g_.get(), ch.get()), "sluice_group_remove");
    }

    /* Controller: a global transition to every live member; calls are serialised. */
    void send(const sluice_transition_t &t)
    {
        detail::check(sluice_group_transition_send(g_.get(), &t, 0),
                      "sluice_group_transition_send");
    }

    /* Controller: `event` to one member chosen by the policy; any thread. */
    event_token send_event(uint32_t stream, const sluice_transition_t &event)
    {
        sluice_token_t tok;
        detail::check(sluice_group_event_send(g_.get(), stream, &event, 0, &tok),
                      "sluice_group_event_send");
        return event_token(tok);
    }

    /* Source: the next item of any member; std::nullopt once all ended (SLUICE_EOF). One thread. */
    [[nodiscard]] std::optional<group_item> next()
    {
        sluice_item_t it;
        std::size_t member = 0;
        int rc = sluice_group_next(g_.get(), 0, &it, &member);
        if (rc == SLUICE_EOF)
            return std::nullopt;
        if (rc == SLUICE_EPEERCLOSED || rc == SLUICE_EPEERDEAD)
            return group_item{ member, rc, item{ sluice_transition_t{}, UINT32_MAX, event_token() } };
        detail::check(rc, "sluice_group_next");
        return group_item{ member, SLUICE_OK,
                           item{ it.transition, it.stream,
                                 it.token.channel ? event_token(it.token) : event_token() } };
    }

private:
    std::unique_ptr<sluice_group_t, detail::group_free> g_;
};

} // namespace sluice

#endif
