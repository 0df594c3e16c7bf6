/*
 * speedups.h -- what the parts of zerg._speedups share (not a public API).
 *
 * speedups.c holds the receive slots, the dispatcher and the BufferSequence
 * core; connfast.c the connection fast path, which works on those objects.
 * Everything here has hidden visibility (-fvisibility=hidden): nothing
 * leaves the module.
 */
#ifndef ZERG_SPEEDUPS_H
#define ZERG_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "uringshim.h"

#define OFFSET_SHIFT 16
#define SLOT_MASK ((1u << OFFSET_SHIFT) - 1)

/* Ops, as zerg._ring.Op. */
enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3, OP_CANCEL = 4, OP_POLL = 5,
       OP_POLL_REMOVE = 6, OP_MSG = 7 };

typedef struct {
    PyObject_HEAD
    zu_ring *ring;
    PyObject *recv_view;        /* read-only memoryview of the receive region */
    PyObject *owner;            /* the Ring object: keeps the zu_ring alive */
    Py_ssize_t slot_size;
    unsigned total;
    int incremental;
    long long out;              /* slots the application holds (some part of) */
    long long bytes_in;
    long long shared_cqes;
    unsigned short *returns;    /* slot ids waiting for the next flush */
    unsigned nreturns;
    unsigned *off;              /* incremental: next offset the kernel fills */
    unsigned *parts;            /* incremental: parts the application holds */
    unsigned char *done;        /* incremental: the kernel moved on */
    PyObject *parked;           /* list of sinks waiting for slots */
    int relief;
} RecvSlotsObject;

typedef struct {
    PyObject_HEAD
    PyObject *segs;                 /* list of read-only 'B' memoryviews */
    PyObject *offs;                 /* list of int: offs[i] = chain offset of segs[i] */
    PyObject *start, *stop;         /* int: the window, in chain coordinates */
    PyObject *slots;                /* the Lease, or None */
    PyObject *owns;                 /* bool */
} SeqObject;

typedef struct {
    PyObject_HEAD
    PyObject *keys;
    PyObject *give_back;
    PyObject *next;                 /* int */
    PyObject *held_from;            /* int */
} LeaseObject;

extern PyTypeObject RecvSlotsType;
extern PyTypeObject SequenceCoreType;
extern PyTypeObject SlotLeaseType;
extern PyTypeObject *seq_type;      /* zerg.BufferSequence (bind_sequence) */
extern PyObject *empty_view;        /* the shared empty memoryview of _buffers */
extern PyObject *int_released;      /* sys.maxsize: held_from once all went back */

/* receive slots */
PyObject *slots_view_c(RecvSlotsObject *self, unsigned long key, Py_ssize_t n);
int slots_give_back_key(RecvSlotsObject *self, unsigned long key);

/* BufferSequence */
int seq_bounds(SeqObject *self, Py_ssize_t *a, Py_ssize_t *b);
int seq_check_alive(SeqObject *self);
/* The owning sequence over segs (offs: their chain offsets, one more than
 * segs; keys: where each lives) and its lease: 0 and two new references, or
 * -1 with an exception.  The lists are shared, not copied. */
int seq_new_owning(PyObject *segs, PyObject *offs, PyObject *keys, PyObject *give_back,
                   SeqObject **seq, LeaseObject **lease);
int seq_make_single(PyObject *view, PyObject *key, PyObject *give_back, SeqObject **seq,
                    LeaseObject **lease);
int seq_drop_single(SeqObject *self);
/* seq[:] sharing seq's chain and lease, not owning (no validity check). */
PyObject *seq_window(SeqObject *src);

/* The exception being raised, normalized, with its traceback; the error
 * indicator is cleared.  NULL if none. */
PyObject *fetch_exception(void);
/* Raise exc again (a reference from fetch_exception, stolen). */
void restore_exception(PyObject *exc);

/* Fields of Python classes with __slots__, by offset (connfast.c). */
#define FIELD(o, off) (*(PyObject **)((char *)(o) + (off)))

/* Store v (a new reference, stolen) in a field, dropping the old value
 * after the store (its destructor may run code that reads the field). */
static inline void
field_set(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject *old = FIELD(o, off);
    FIELD(o, off) = v;
    Py_XDECREF(old);
}

/* The offset of tp's writable __slots__ field name; -1 with TypeError if it
 * is not one. */
int slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *off);

/* Put the C methods defs[0..n) in cls, keeping the Python functions they
 * replace (the class's, or inherited) in *refs_out[i].  All or nothing. */
int install_methods(PyTypeObject *cls, PyMethodDef *defs, PyObject **refs_out[], int n);
/* The methods of a NULL-terminated PyMethodDef table. */
#define N_METHODS(defs) ((int)(sizeof(defs) / sizeof((defs)[0])) - 1)

/* the loop fast path (loopfast.c) */
int loopfast_init(PyObject *module);

/* the connection fast path (connfast.c) */
int connfast_init(PyObject *module);
/* True when sink is exactly the bound ProtocolConnection class: the
 * dispatcher then calls its C methods without looking them up. */
int connfast_owns(PyObject *sink);
/* The same for exactly the bound Connection class (levels 1-3). */
int connfast_owns_base(PyObject *sink);
PyObject *c_on_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *c_on_send(PyObject *self, PyObject *arg);
PyObject *pc_on_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *pc_on_send(PyObject *self, PyObject *arg);

#endif
