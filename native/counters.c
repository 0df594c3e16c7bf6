/*
 * counters.c -- int fields the hot path updates without boxing them.
 *
 * Why: the per-message counters of the connection classes (bytes in and
 * out, the input pipe's head/tail/unread, the output pipe's pending bytes,
 * the reactor's traffic) were __slots__ fields holding Python ints, so each
 * update from C made a new PyLong: about half of the objects the Protocol
 * path allocated per message (benchmarks/allocations.py).
 *
 * What: counters(name, fields) makes a base class whose instances carry
 * `fields` as C Py_ssize_t fields (zero at first).  Python code sees plain
 * int attributes (a value outside Py_ssize_t raises OverflowError, anything
 * but an int TypeError, `del` TypeError; a refused value changes nothing,
 * which is why these are getsets and not T_PYSSIZET members: those store -1
 * before they report the error).  The Python classes that keep the counters
 * derive from it (zerg._native.counters picks this or, without the
 * extension, a class with the same __slots__).  slot_offset() reports such a
 * field with SSIZE_FIELD set (counter_offset), and connfast.c's
 * field_ssize/field_set_ssize then read and write the C integer in place.
 *
 * Rules: as speedups.c.  The getset tables and the names they point to live
 * as long as the process, like the few types made from them.
 */
#include "speedups.h"

#include <stddef.h>

#define MAX_COUNTERS 16

static PyObject *kept;          /* the names the types' getsets point into */

/* A counter's descriptor: its offset in the instance is the closure. */
static PyObject *
counter_get(PyObject *self, void *closure)
{
    return PyLong_FromSsize_t(*(Py_ssize_t *)((char *)self + (Py_ssize_t)closure));
}

/* Unlike a T_PYSSIZET member, a refused value leaves the field as it was. */
static int
counter_set(PyObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "a counter field cannot be deleted");
        return -1;
    }
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "a counter field takes an int, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    Py_ssize_t v = PyLong_AsSsize_t(value);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *(Py_ssize_t *)((char *)self + (Py_ssize_t)closure) = v;
    return 0;
}

int
counter_offset(PyObject *descr, Py_ssize_t *off)
{
    if (!Py_IS_TYPE(descr, &PyGetSetDescr_Type))
        return 0;
    PyGetSetDef *g = ((PyGetSetDescrObject *)descr)->d_getset;
    if (g->get != counter_get || g->set != counter_set)
        return 0;
    *off = (Py_ssize_t)g->closure;
    return 1;
}

/* A heap base type's instances hold a reference to their type (the subclass's
 * subtype_dealloc leaves it to the first heap base). */
static void
counters_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
sp_counters(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *name, *fields, *full = NULL, *type = NULL;
    if (!PyArg_ParseTuple(args, "UO!:counters", &name, &PyTuple_Type, &fields))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    if (n < 1 || n > MAX_COUNTERS) {
        PyErr_Format(PyExc_ValueError, "counters: 1 to %d fields, not %zd", MAX_COUNTERS, n);
        return NULL;
    }
    if (kept == NULL && (kept = PyList_New(0)) == NULL)
        return NULL;
    /* A heap type refers to its getset table (it copies only members): the
     * table lives as long as the process, like the type. */
    PyGetSetDef *getset = PyMem_Calloc((size_t)n + 1, sizeof(PyGetSetDef));
    if (getset == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyTuple_GET_ITEM(fields, i);
        const char *s = PyUnicode_Check(f) ? PyUnicode_AsUTF8(f) : NULL;
        if (s == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "counters: field names are str");
            goto fail;
        }
        if (PyList_Append(kept, f) < 0)
            goto fail;
        getset[i].name = s;
        getset[i].get = counter_get;
        getset[i].set = counter_set;
        getset[i].doc = "An int counter (a C integer).";
        getset[i].closure = (void *)(sizeof(PyObject) + (size_t)i * sizeof(Py_ssize_t));
    }
    full = PyUnicode_FromFormat("zerg._speedups.%U", name);
    if (full == NULL || PyList_Append(kept, full) < 0)
        goto fail;
    const char *tpname = PyUnicode_AsUTF8(full);
    if (tpname == NULL)
        goto fail;
    PyType_Slot slots[] = {
        {Py_tp_getset, getset},
        {Py_tp_dealloc, (void *)counters_dealloc},
        {Py_tp_doc, (void *)"Int fields kept as C integers (zerg._native.counters)."},
        {0, NULL},
    };
    PyType_Spec spec = {
        .name = tpname,
        .basicsize = (int)(sizeof(PyObject) + (size_t)n * sizeof(Py_ssize_t)),
        .itemsize = 0,
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
        .slots = slots,
    };
    type = PyType_FromSpec(&spec);
    if (type == NULL)
        goto fail;
    Py_DECREF(full);
    return type;
fail:
    Py_XDECREF(full);
    PyMem_Free(getset);
    return NULL;
}

static PyMethodDef counters_methods[] = {
    {"counters", (PyCFunction)sp_counters, METH_VARARGS,
     "counters(name, fields) -> type: a base class with these int fields as C integers."},
    {NULL, NULL, 0, NULL},
};

int
counters_init(PyObject *module)
{
    return PyModule_AddFunctions(module, counters_methods);
}
