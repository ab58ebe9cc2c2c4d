/* loopscope.agent._speedups: the step hook (agent/steps.py), the per-task
 * creation record (tracker.make_track) and the end recorded on release
 * (tracker.py's DelTrackedTask.__del__), compiled.
 *
 * Why this exists: the step hook replaces asyncio.events.Handle._run, so it
 * runs for every callback the loop runs.  Written in Python, the least an
 * exact per-step timer can do (two clock reads and a histogram increment)
 * already costs 5-10 % of a task-spawning benchmark and of an aiohttp
 * request, and the interpreter runs that bytecode at about half the
 * instructions per cycle of asyncio's own C task code.  The same work in C
 * costs less than asyncio's own Python Handle._run it replaces.
 *
 * It is optional: it only depends on CPython's C API (no third-party
 * library), it is built when a compiler is there, and steps.py and
 * tracker.py fall back to their Python versions, which do exactly the same
 * thing line for line, when it is not (or when LOOPSCOPE_SPEEDUPS=0).  Any
 * change here changes steps.py's _run or tracker.py's track too, and the
 * reverse.
 *
 * Safety rules, because this runs inside other people's services:
 *  - the callback's own exceptions are handled exactly as asyncio does
 *    (SystemExit and KeyboardInterrupt propagate, anything else goes to the
 *    loop's exception handler through steps._report);
 *  - nothing of ours ever raises: an error in the accounting is handed to
 *    the tracker's note_error and cleared;
 *  - slots are only read at fixed offsets on objects whose type was
 *    checked against the class those offsets were read from (exactly, or
 *    as a subclass: a subclass keeps its bases' slots where they are).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stddef.h>
#include <time.h>

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

/* interned attribute names, made once */
static PyObject *s_loop, *s_callback, *s_args, *s_context, *s_metrics;
static PyObject *s_state, *s_exception, *s_unregister, *s_long_step;
static PyObject *s_PENDING, *s_FINISHED, *s_self, *zero, *fzero, *empty_tuple;

/* Offsets of the __slots__ this hook touches, read from the classes' member
 * descriptors when a StepRun is made. */
enum { M_FINE, M_COUNTS, M_STEP_MAX, M_SLOW, M_N };
static const char *m_names[M_N] = {"fine", "counts", "step_max", "slow"};
enum { T_CANCEL, T_N };
enum { H_LOOP, H_CALLBACK, H_ARGS, H_CONTEXT, H_N };
static const char *h_names[H_N] = {"_loop", "_callback", "_args", "_context"};
static const char *t_names[T_N] = {"_ls_cancel"};  /* the rest are the task's Times */

/* A getset descriptor's C getter (see cget_of). */
typedef struct {
    getter get;
    void *closure;
} CGet;

#define MAX_BOUNDS 128
#define SEEN_N 4  /* loops whose metrics a step hook remembers */

/* The step-duration histogram's layout (metrics.py's FINE_LIMIT and BOUNDS). */
typedef struct {
    double fine_limit;
    Py_ssize_t nbounds;
    double bounds[MAX_BOUNDS];
} Hist;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    /* what every step reads first, together in as few cache lines as can be */
    Py_ssize_t h_off[H_N];
    PyObject *seen_loop[SEEN_N];  /* borrowed, compared only (loop_metrics) */
    unsigned long seen_gen[SEEN_N];
    Py_ssize_t m_off[M_N];
    Py_ssize_t t_off[T_N];
    Py_ssize_t ended_off;       /* eager_cls's _ls_ended */
    CGet g_state, g_exception;  /* cls's _state and _exception */
    PyObject *original;   /* asyncio's Handle._run, for loops we do not watch */
    PyObject *report;     /* steps._report(handle, exc) */
    PyObject *step_type, *wakeup_type;
    PyObject *cls, *eager_cls, *metrics_cls;
    PyObject *handle_cls; /* asyncio.events.Handle: its slots' offsets */
    PyObject *step_end;   /* tracker.note_end(m, task, t1) */
    PyObject *clean_end;  /* tracker.clean_end(task, t1) */
    PyObject *budget;     /* a one-element list: the done ring's budget */
    PyObject *hooks;      /* loopscope.hooks.HOOKS: .unregister */
    PyObject *note_error;
    PyObject *handle_sub; /* the last subclass of Handle seen (TimerHandle) */
    /* The metrics of the loops this hook saw last (see loop_metrics), by
     * pairs: a weak reference to the loop, its metrics. */
    PyObject *seen[2 * SEEN_N];
    Hist hist;  /* its bounds are read by steps over FINE_LIMIT only */
} StepRun;

static inline double
monotonic(void)
{
    /* what time.monotonic() reads on Linux and the BSDs */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Which way the step hook's branches usually go, so that the compiler lays
 * the usual path out in as few cache lines as it can and puts the rest
 * after it.  On a server nothing of ours stays in the instruction cache
 * from one step to the next (aiohttp runs through ~580 KB of code per
 * request), so each step fetches every line of our path again: the lines
 * cost more than the instructions (BENCHMARKS.md, twelfth session).  With
 * these hints, 3.14: 391 -> 325 extra instruction-cache misses per aiohttp
 * request, everything on.  What runs once per task or on an error only
 * (a task's end, a step past the fine buckets, an exception) is kept out of
 * line (NOINLINE, COLD: GCC then moves the cold blocks to a section of their
 * own), so that a step's usual path spans fewer lines: the step hook went
 * from 4.9 to 3.2 KB of code (BENCHMARKS.md, fourteenth session). */
#if defined(__GNUC__) || defined(__clang__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))
#define COLD __attribute__((cold, noinline))
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define ASSUME(x) do { if (!(x)) __builtin_unreachable(); } while (0)
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define NOINLINE
#define COLD
#define ALWAYS_INLINE inline
#define ASSUME(x) ((void)0)
#endif

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* PyObject_GetOptionalAttr (3.13+): *out is the attribute, or NULL when
 * there is none (no exception); -1 on any other error. */
static int
get_optional_attr(PyObject *obj, PyObject *name, PyObject **out)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, out);
#else
    *out = PyObject_GetAttr(obj, name);
    if (*out != NULL)
        return 1;
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
        return -1;
    PyErr_Clear();
    return 0;
#endif
}

/* A getset descriptor's C getter, to read a task's `_state` and `_exception`
 * (and a coroutine's `__qualname__`) without a generic attribute lookup:
 * that lookup searches the whole class hierarchy for the name first, and
 * for a Task subclass often misses the type cache (~200 instructions, a
 * few times per step).  Set only where every object it is used on is an
 * instance of the class that defines the descriptor. */
static void
cget_from(PyObject *d, PyTypeObject *tp, CGet *out)
{
    out->get = NULL;
    out->closure = NULL;
    if (d != NULL && Py_IS_TYPE(d, &PyGetSetDescr_Type)) {
        PyGetSetDef *def = ((PyGetSetDescrObject *)d)->d_getset;
        if (def->get != NULL && PyType_IsSubtype(tp, ((PyDescrObject *)d)->d_type)) {
            out->get = def->get;
            out->closure = def->closure;
        }
    }
}

/* The getter behind `cls.name`, if it is a C getset (else none: generic). */
static void
cget_of(PyObject *cls, PyObject *name, CGet *out)
{
    PyObject *d = PyObject_GetAttr(cls, name);  /* a class's getset: the descriptor itself */
    if (d == NULL)
        PyErr_Clear();
    cget_from(d, (PyTypeObject *)cls, out);
    Py_XDECREF(d);
}

/* The getters of `_state` and `_exception` for tasks of `cls` and of its
 * subclass `sub` (NULL: none): a getter is kept only if both classes find
 * the same one. */
static void
task_getters(PyObject *cls, PyObject *sub, CGet *state, CGet *exc)
{
    CGet other;
    cget_of(cls, s_state, state);
    if (sub != NULL && (cget_of(sub, s_state, &other), other.get != state->get || other.closure != state->closure))
        state->get = NULL;
    cget_of(cls, s_exception, exc);
    if (sub != NULL && (cget_of(sub, s_exception, &other), other.get != exc->get || other.closure != exc->closure))
        exc->get = NULL;
}

static inline PyObject *
cget(const CGet *g, PyObject *obj, PyObject *name)
{
    return g->get != NULL ? g->get(obj, g->closure) : PyObject_GetAttr(obj, name);
}

/* An attribute read from the object's own __dict__ (1 and a new reference
 * in *out, 0 if it is not there, -1 on error), the generic lookup where the
 * object has no __dict__.  For the hooks' tuples, which loopscope's own
 * object holds: the generic lookup first searches the class hierarchy for a
 * descriptor of that name, which costs more than the dict read.
 *
 * Never for objects of the program's (a loop's _loopscope_metrics): asking
 * for an object's __dict__ makes a real dict of its inline attribute values
 * (3.11+), and the interpreter's specialised attribute accesses on that
 * object then take their slow paths.  Reading the loop's metrics this way
 * cost ~6,000 instructions per aiohttp request on 3.14, in asyncio's own
 * code, for the ~200 per step it saved. */
static int
own_attr(PyObject *obj, PyObject *name, PyObject **out)
{
    PyTypeObject *tp = Py_TYPE(obj);
    *out = NULL;
    if (tp->tp_dictoffset != 0 || (tp->tp_flags & Py_TPFLAGS_MANAGED_DICT)) {
        PyObject *d = PyObject_GenericGetDict(obj, NULL);
        if (d != NULL) {
            PyObject *v = PyDict_GetItemWithError(d, name);  /* borrowed from d */
            if (v != NULL) {
                *out = Py_NewRef(v);
                Py_DECREF(d);
                return 1;
            }
            Py_DECREF(d);
            if (PyErr_Occurred())
                return -1;
            /* not in its dict: a class attribute, maybe (the generic way) */
        }
        else if (PyErr_ExceptionMatches(PyExc_AttributeError))
            PyErr_Clear();
        else
            return -1;
    }
    return get_optional_attr(obj, name, out);
}

static int member_offset(PyObject *cls, const char *name, Py_ssize_t *out);

/* The class of loopscope's hooks object (hooks.py's Hooks) and the offsets
 * of its `register` and `unregister` slots, read by hooks_layout when an
 * object of this module is given the hooks: whether a hook is installed is
 * then two loads, for every task.  Another class (none today) is read the
 * generic way. */
static PyTypeObject *hooks_type;
enum { HOOK_REGISTER, HOOK_UNREGISTER };
static Py_ssize_t hooks_off[2];

static void
hooks_layout(PyObject *hooks)
{
    PyTypeObject *tp = Py_TYPE(hooks);
    Py_ssize_t reg, unreg;
    if (tp == hooks_type)
        return;
    if (member_offset((PyObject *)tp, "register", &reg) < 0 || member_offset((PyObject *)tp, "unregister", &unreg) < 0) {
        PyErr_Clear();  /* not slots: hook_on reads them the generic way */
        return;
    }
    Py_XSETREF(hooks_type, (PyTypeObject *)Py_NewRef(tp));
    hooks_off[HOOK_REGISTER] = reg;
    hooks_off[HOOK_UNREGISTER] = unreg;
}

/* Whether the hooks object has callbacks for an event (its tuple at `name`,
 * which is hooks_off[which] in a Hooks, is not empty): 1, 0, or -1 on
 * error. */
static NOINLINE int
hook_on_slow(PyObject *hooks, PyObject *name)
{
    PyObject *v;
    int r = own_attr(hooks, name, &v);
    if (r <= 0) {
        if (r == 0)
            PyErr_Format(PyExc_AttributeError, "the hooks have no %U", name);
        return -1;
    }
    r = PyTuple_CheckExact(v) ? PyTuple_GET_SIZE(v) > 0 : PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* Inline: the usual answer is one load and a compare in the caller's lines. */
static inline int
hook_on(PyObject *hooks, int which, PyObject *name)
{
    if (LIKELY(Py_TYPE(hooks) == hooks_type)) {
        PyObject *v = SLOT(hooks, hooks_off[which]);
        if (LIKELY(v != NULL && PyTuple_CheckExact(v)))
            return PyTuple_GET_SIZE(v) > 0;
    }
    return hook_on_slow(hooks, name);
}

/* Replace a slot's value, stealing the reference to `value`.  Fails (with
 * MemoryError set) only when `value` is NULL. */
static inline int
set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    if (value == NULL)
        return -1;
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
    return 0;
}

/* A slot set to the float `v`.  When the slot holds the only reference to
 * an exact float, that float is changed in place: nothing else can see it
 * change (CPython's own str concatenation does the same with a str it alone
 * holds), and a step then allocates and releases no float for its busy
 * times, which on a server costs in cache lines more than in instructions
 * (BENCHMARKS.md, thirteenth session).  A reader on another thread holds its
 * own reference to what it read, so the float it holds is never changed
 * under it; without the GIL this would not hold, and a new float is made. */
static inline int
set_float(PyObject *obj, Py_ssize_t off, double v)
{
#ifndef Py_GIL_DISABLED
    PyObject *old = SLOT(obj, off);
    if (LIKELY(old != NULL && PyFloat_CheckExact(old) && Py_REFCNT(old) == 1)) {
        ((PyFloatObject *)old)->ob_fval = v;
        return 0;
    }
#endif
    return set_slot(obj, off, PyFloat_FromDouble(v));
}

/* -1 with AttributeError("NAME is not set"): out of the hot paths' lines. */
static COLD int
unset_error(const char *name)
{
    PyErr_Format(PyExc_AttributeError, "%s is not set", name);
    return -1;
}

/* A slot read as a double; -1 with an exception if it is unset or not a number. */
static inline int
get_double(PyObject *obj, Py_ssize_t off, const char *name, double *out)
{
    PyObject *v = SLOT(obj, off);
    if (UNLIKELY(v == NULL))
        return unset_error(name);
    if (LIKELY(PyFloat_CheckExact(v))) {
        *out = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    *out = d;
    return 0;
}

/* list[i] += 1 on a list of ints */
static NOINLINE int
bump(PyObject *list, Py_ssize_t i)
{
    if (list == NULL || !PyList_CheckExact(list) || i < 0 || i >= PyList_GET_SIZE(list)) {
        PyErr_SetString(PyExc_IndexError, "histogram index out of range");
        return -1;
    }
    PyObject *item = PyList_GET_ITEM(list, i);
    Py_ssize_t n = PyLong_AsSsize_t(item);
    if (n == -1 && PyErr_Occurred())
        return -1;
    PyObject *next = PyLong_FromSsize_t(n + 1);
    if (next == NULL)
        return -1;
    PyList_SET_ITEM(list, i, next);
    Py_DECREF(item);
    return 0;
}

/* ------------------------------------------------------------------------
 * MetricsCore: the base of metrics.py's LoopMetrics, the numbers the step
 * hook writes on every step (`busy`, `nested`) or every task's end
 * (`done`) kept as C numbers.
 *
 * Why: in a slot, adding a step's time to `busy` replaces one float object
 * with another (an allocation, a release, the lines of both), and counting
 * an end does the same with an int: on a server, a few steps and an end
 * per request.  Here each is one store.  From Python they are attributes
 * like the slots they replace (a float, a float, an int), which the Python
 * step hook and the readers use unchanged.  Every compiled user of a
 * LoopMetrics checks its class first (metrics_cls), which must derive from
 * this one (core_base_check).
 */
typedef struct {
    PyObject_HEAD
    double busy;      /* seconds spent running callbacks */
    double nested;    /* eager first steps' seconds inside the running step */
    Py_ssize_t done;  /* tasks that finished cleanly */
} MetricsCore;

#define MCORE(m) ((MetricsCore *)(m))

enum { MC_BUSY, MC_NESTED, MC_DONE };
static const char *mc_names[] = {"busy", "nested", "done"};

static PyObject *
mcore_get(PyObject *self, void *closure)
{
    MetricsCore *mc = MCORE(self);
    switch ((int)(intptr_t)closure) {
    case MC_BUSY:
        return PyFloat_FromDouble(mc->busy);
    case MC_NESTED:
        return PyFloat_FromDouble(mc->nested);
    default:
        return PyLong_FromSsize_t(mc->done);
    }
}

/* Checked before it is stored (a member descriptor of 3.11 stores -1 first,
 * then reports the wrong type): a value of the wrong type leaves the
 * number as it was. */
static int
mcore_set(PyObject *self, PyObject *value, void *closure)
{
    int i = (int)(intptr_t)closure;
    MetricsCore *mc = MCORE(self);
    if (value == NULL) {
        PyErr_Format(PyExc_TypeError, "cannot delete %s", mc_names[i]);
        return -1;
    }
    if (i == MC_DONE) {
        Py_ssize_t n = PyLong_Check(value) ? PyLong_AsSsize_t(value) : -1;
        if (n == -1 && (!PyLong_Check(value) || PyErr_Occurred())) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "done must be an int, not %.100s", Py_TYPE(value)->tp_name);
            return -1;
        }
        mc->done = n;
        return 0;
    }
    double d = PyFloat_AsDouble(value);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    if (i == MC_BUSY)
        mc->busy = d;
    else
        mc->nested = d;
    return 0;
}

static PyGetSetDef mcore_getset[] = {
    {"busy", mcore_get, mcore_set, "seconds the loop spent running callbacks", (void *)MC_BUSY},
    {"nested", mcore_get, mcore_set, "seconds of eager first steps run inside the step now running", (void *)MC_NESTED},
    {"done", mcore_get, mcore_set, "tasks that finished cleanly", (void *)MC_DONE},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MetricsCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loopscope.agent._speedups.MetricsCore",
    .tp_doc = "The step hook's numbers of a loop's metrics, as C numbers (metrics.py's LoopMetrics derives from it).",
    .tp_basicsize = sizeof(MetricsCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_getset = mcore_getset,
    .tp_new = PyType_GenericNew,
};

/* 0 if `metrics_cls` derives from MetricsCore, else -1 with TypeError. */
static int
core_base_check(PyObject *metrics_cls)
{
    if (PyType_Check(metrics_cls) && PyType_IsSubtype((PyTypeObject *)metrics_cls, &MetricsCoreType))
        return 0;
    PyErr_SetString(PyExc_TypeError, "metrics_cls must derive from _speedups.MetricsCore");
    return -1;
}

/* ------------------------------------------------------------------------
 * Counts: a fixed number of counters in one C array, for the step-time
 * histogram's buckets (metrics.py's LoopMetrics.fine and .counts).
 *
 * Why: in a list, counting a step replaces one int object with another (a
 * release and an allocation, and the lines of both) in a list of a thousand
 * pointers to ints spread over the heap; here it is an increment of one
 * word.  From Python it is a sequence of ints (len, index, assignment,
 * iteration), so metrics.py and the Python step hook read and write it the
 * way they do a list.
 */
typedef struct {
    PyObject_VAR_HEAD
    unsigned long long n[1];
} Counts;

static PyTypeObject CountsType;

static PyObject *
counts_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t size;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "Counts() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "n:Counts", &size))
        return NULL;
    if (size < 0 || size > 1000000) {
        PyErr_SetString(PyExc_ValueError, "Counts(size): size must be between 0 and 1,000,000");
        return NULL;
    }
    Counts *self = (Counts *)type->tp_alloc(type, size);  /* zeroed */
    return (PyObject *)self;
}

static Py_ssize_t
counts_len(PyObject *self)
{
    return Py_SIZE(self);
}

static PyObject *
counts_item(PyObject *self, Py_ssize_t i)
{
    if (i < 0 || i >= Py_SIZE(self)) {
        PyErr_SetString(PyExc_IndexError, "Counts index out of range");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(((Counts *)self)->n[i]);
}

static int
counts_ass_item(PyObject *self, Py_ssize_t i, PyObject *v)
{
    if (i < 0 || i >= Py_SIZE(self)) {
        PyErr_SetString(PyExc_IndexError, "Counts assignment index out of range");
        return -1;
    }
    if (v == NULL) {
        PyErr_SetString(PyExc_TypeError, "Counts items cannot be deleted");
        return -1;
    }
    unsigned long long k = PyLong_AsUnsignedLongLong(v);
    if (k == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    ((Counts *)self)->n[i] = k;
    return 0;
}

static PyObject *
counts_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<Counts of %zd buckets>", Py_SIZE(self));
}

static PySequenceMethods counts_as_sequence = {
    .sq_length = counts_len,
    .sq_item = counts_item,
    .sq_ass_item = counts_ass_item,
};

static PyTypeObject CountsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loopscope.agent._speedups.Counts",
    .tp_doc = "Counts(size): size counters, zero, as a sequence of ints (the step histogram's buckets).",
    .tp_basicsize = offsetof(Counts, n),
    .tp_itemsize = sizeof(unsigned long long),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_as_sequence = &counts_as_sequence,
    .tp_repr = counts_repr,
    .tp_new = counts_new,
};

/* counts[i] += 1, for a Counts or a list of ints */
static inline int
count_in(PyObject *counts, Py_ssize_t i)
{
    if (LIKELY(Py_IS_TYPE(counts, &CountsType) && i >= 0 && i < Py_SIZE(counts))) {
        ((Counts *)counts)->n[i]++;
        return 0;
    }
    return bump(counts, i);
}

/* ------------------------------------------------------------------------
 * TaskTimes: the per-step numbers of a task (its steps, busy time, longest
 * step, last step, first step's delay, creation time) as C fields inside the
 * task object, for a class between asyncio.Task and loopscope's task classes
 * (task_base).
 *
 * Why: a step updates four of them.  As slots holding Python numbers that
 * was reading and writing four objects spread over the heap, each its own
 * data cache line, with the code of their checks, on every step; on a
 * server nothing of that stays cached between two steps (BENCHMARKS.md,
 * thirteenth session).  Here it is a few stores into the task itself.
 *
 * From Python the fields are attributes of the same names as the slots they
 * replace, and behave as those slots did: an unset one raises
 * AttributeError, `del` unsets it, `_ls_first` may be None.  So the Python
 * readers, the Python step hook and tracker.py's Python creation record are
 * the same code whichever class their task has.
 */
enum { F_CREATED, F_FIRST, F_LAST, F_BUSY, F_LONGEST, F_STEPS, F_N };
static const char *f_names[F_N] = {"_ls_created", "_ls_first", "_ls_last", "_ls_busy", "_ls_longest", "_ls_steps"};
#define F_BIT(f) (1u << (f))
#define FIRST_NONE (1u << F_N)  /* _ls_first is None (no step yet) */

typedef struct {
    double v[F_STEPS];  /* indexed by F_CREATED .. F_LONGEST */
    Py_ssize_t steps;
    unsigned int set;   /* F_BIT(f) when field f is set, and FIRST_NONE */
} Times;

/* The slots of an eager task beside its Times (EagerInit), and of an exact
 * task's record (XRec, "Exact tasks") with its whole origin when one was
 * recorded (tracker._set_origin). */
enum { E_CANCEL, E_ENDED, E_CORO_NAME, E_NAME_CELL, E_CODE, E_LASTI, E_LINK, E_PLINK, E_N };
enum { X_ORIGIN = E_N, X_N };
static const char *x_names[X_N] = {"_ls_cancel", "_ls_ended", "_ls_coro_name", "_ls_name_cell", "_ls_code",
                                   "_ls_lasti", "_ls_link", "_ls_plink", "_ls_origin"};

/* What loopscope keeps of an exact asyncio.Task, in the task registry
 * beside the task (see "Exact tasks"): what an EagerTrackedTask keeps in
 * its slots and its Times. */
struct XRec {
    Times t;
    PyObject *f[X_N];
    PyObject *m;      /* the loop's metrics, once its first step ran in it */
    PyObject *owner;  /* the EagerInit that was on when it was made */
    int eager;        /* made by EagerInit (its `_ls_eager`), else by Track */
};
typedef struct XRec XRec;

static inline XRec *reg_rec(PyObject *p);
static PyTypeObject *exact_type;  /* asyncio.Task while exact tasks are on, else NULL */
static PyObject *exact_init;      /* the EagerInit that makes exact tasks, while on */

static PyTypeObject *times_type; /* made by task_base, once */
static Py_ssize_t times_off;     /* where Times is in an instance of it */

static inline Times *
times_of(PyObject *task)
{
    return (Times *)((char *)task + times_off);
}

/* Field `f` of `t`, as the attribute of that name reads (`who` names the
 * object in the error). */
static PyObject *
times_read(const Times *t, int f, PyObject *who)
{
    if (!(t->set & F_BIT(f))) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'", Py_TYPE(who)->tp_name, f_names[f]);
        return NULL;
    }
    if (f == F_STEPS)
        return PyLong_FromSsize_t(t->steps);
    if (f == F_FIRST && (t->set & FIRST_NONE))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(t->v[f]);
}

/* Field `f` of `t` set to `value` (NULL: unset), as the attribute's store. */
static int
times_write(Times *t, int f, PyObject *value)
{
    if (value == NULL) {
        t->set &= ~(F_BIT(f) | (f == F_FIRST ? FIRST_NONE : 0));
        return 0;
    }
    if (f == F_STEPS) {
        Py_ssize_t n = PyLong_AsSsize_t(value);
        if (n == -1 && PyErr_Occurred())
            return -1;
        t->steps = n;
    }
    else if (f == F_FIRST && value == Py_None)
        t->set |= FIRST_NONE;
    else {
        double d = PyFloat_AsDouble(value);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        t->v[f] = d;
        if (f == F_FIRST)
            t->set &= ~FIRST_NONE;
    }
    t->set |= F_BIT(f);
    return 0;
}

static PyObject *
times_get(PyObject *task, void *closure)
{
    return times_read(times_of(task), (int)(intptr_t)closure, task);
}

static int
times_set(PyObject *task, PyObject *value, void *closure)
{
    return times_write(times_of(task), (int)(intptr_t)closure, value);
}

#define TIMES_GETSET(f) {(char *)0, times_get, times_set, NULL, (void *)(intptr_t)(f)}
static PyGetSetDef times_getset[F_N + 1] = {
    TIMES_GETSET(F_CREATED), TIMES_GETSET(F_FIRST), TIMES_GETSET(F_LAST), TIMES_GETSET(F_BUSY),
    TIMES_GETSET(F_LONGEST), TIMES_GETSET(F_STEPS), {NULL},
};

/* task_base(base) -> the TaskTimes class derived from `base` (asyncio.Task),
 * made on the first call; None for another base afterwards (one per
 * process: the compiled parts read every task's Times at one offset). */
static PyObject *
task_base(PyObject *mod, PyObject *base)
{
    if (!PyType_Check(base) || !(((PyTypeObject *)base)->tp_flags & Py_TPFLAGS_BASETYPE)
        || ((PyTypeObject *)base)->tp_itemsize != 0) {
        PyErr_SetString(PyExc_TypeError, "task_base(base): base must be a class that can be subclassed, of fixed size");
        return NULL;
    }
    if (times_type != NULL) {
        if (times_type->tp_base == (PyTypeObject *)base)
            return Py_NewRef((PyObject *)times_type);
        Py_RETURN_NONE;
    }
    for (int f = 0; f < F_N; f++)
        times_getset[f].name = f_names[f];
    Py_ssize_t off = (((PyTypeObject *)base)->tp_basicsize + 7) & ~(Py_ssize_t)7;
    PyType_Slot slots[] = {
        {Py_tp_getset, times_getset},
        {Py_tp_doc, "asyncio.Task with loopscope's per-step numbers as C fields (agent/_speedups.c, TaskTimes)."},
        {0, NULL},
    };
    PyType_Spec spec = {
        .name = "loopscope.agent._speedups.TaskTimes",
        .basicsize = (int)(off + (Py_ssize_t)sizeof(Times)),
        .itemsize = 0,
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
        .slots = slots,
    };
    PyObject *bases = PyTuple_Pack(1, base);
    if (bases == NULL)
        return NULL;
    PyObject *tp = PyType_FromSpecWithBases(&spec, bases);
    Py_DECREF(bases);
    if (tp == NULL)
        return NULL;
    times_type = (PyTypeObject *)Py_NewRef(tp);
    times_off = off;
    return tp;
}

/* share_module(cls, base) -> bool: `cls` (one of loopscope's task classes)
 * names `base`'s module (asyncio.Task's, _asyncio) as its own.
 *
 * Why: from 3.12 the C methods of a task find asyncio's module state with
 * PyType_GetModuleByDef(type(task)), which looks at the task's class, then
 * walks its MRO to the first class that names the module.  For an exact
 * Task that is the first look; for EagerTrackedTask it is the fourth, with
 * the cache lines of every class on the way, about ten times a request
 * (BENCHMARKS.md, thirteenth session).  Naming the same module on our
 * classes makes every lookup end at the first look, with the very module
 * the walk would find.  Only a class that derives from `base`, that names
 * no module yet, and whose base names one (3.12+; 3.11's Task is static
 * and finds its state without a lookup); the class holds a reference to
 * the module, released with the class (type_dealloc). */
static PyObject *
share_module(PyObject *mod, PyObject *args)
{
    PyObject *cls, *base;
    if (!PyArg_ParseTuple(args, "O!O!:share_module", &PyType_Type, &cls, &PyType_Type, &base))
        return NULL;
    PyTypeObject *tp = (PyTypeObject *)cls, *bt = (PyTypeObject *)base;
    if (!(tp->tp_flags & Py_TPFLAGS_HEAPTYPE) || !(bt->tp_flags & Py_TPFLAGS_HEAPTYPE) || !PyType_IsSubtype(tp, bt))
        Py_RETURN_FALSE;
    PyObject *module = ((PyHeapTypeObject *)bt)->ht_module;
    PyHeapTypeObject *ht = (PyHeapTypeObject *)tp;
    if (module == NULL || !PyModule_Check(module))
        Py_RETURN_FALSE;
    if (ht->ht_module != NULL)
        return PyBool_FromLong(ht->ht_module == module);
    ht->ht_module = Py_NewRef(module);
    Py_RETURN_TRUE;
}

/* Whether tasks of `cls` carry Times (its class derives from TaskTimes);
 * TypeError if not. */
static int
has_times(PyObject *cls)
{
    if (times_type != NULL && PyType_Check(cls) && PyType_IsSubtype((PyTypeObject *)cls, times_type))
        return 0;
    PyErr_Format(PyExc_TypeError, "%R does not derive from task_base()'s class", cls);
    return -1;
}

static int
member_offset(PyObject *cls, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyObject_GetAttrString(cls, name);
    if (d == NULL)
        return -1;
    if (!PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%R.%s is not a slot", cls, name);
        Py_DECREF(d);
        return -1;
    }
    PyMemberDef *def = ((PyMemberDescrObject *)d)->d_member;
    if (def->type != Py_T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%R.%s is not an object slot", cls, name);
        Py_DECREF(d);
        return -1;
    }
    *out = def->offset;
    Py_DECREF(d);
    return 0;
}

/* The object references a type of this module holds are its PyObject *
 * fields from `first` to `last`, declared one after the other: one
 * traverse, clear and dealloc serve every type. */
#define REFS(obj, first, last) ((PyObject **)&(obj)->first), ((PyObject **)&(obj)->last + 1)

static int
refs_traverse(PyObject **p, PyObject **end, visitproc visit, void *arg)
{
    for (; p < end; p++)
        Py_VISIT(*p);
    return 0;
}

static void
refs_clear(PyObject **p, PyObject **end)
{
    for (; p < end; p++)
        Py_CLEAR(*p);
}

static void
gc_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_TYPE(self)->tp_clear(self);
    Py_TYPE(self)->tp_free(self);
}

/* The traverse and clear of a type whose references are its fields from
 * `first` to `last` (see REFS). */
#define REFS_GC(prefix, Type, first, last)                                   \
    static int prefix##_traverse(Type *self, visitproc visit, void *arg)     \
    {                                                                        \
        return refs_traverse(REFS(self, first, last), visit, arg);          \
    }                                                                        \
    static int prefix##_clear(Type *self)                                    \
    {                                                                        \
        refs_clear(REFS(self, first, last));                                 \
        return 0;                                                            \
    }

/* Hand the pending exception to note_error and clear it. */
static COLD void
hand_over_error(PyObject *note_error)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *rr = value ? PyObject_CallOneArg(note_error, value) : NULL;
    Py_XDECREF(rr);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
}

/* file_step past the fine buckets: out of line, so that the usual step's
 * lines hold only its one increment. */
static NOINLINE int
file_long_step(PyObject *m, const Py_ssize_t *mo, const Hist *h, PyObject *what, double t0, double d)
{
    double v;
    /* bisect_right(BOUNDS, d) */
    Py_ssize_t lo = 0, hi = h->nbounds;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (d < h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    if (count_in(SLOT(m, mo[M_COUNTS]), lo) < 0)
        return -1;
    if (get_double(m, mo[M_STEP_MAX], "step_max", &v) < 0)
        return -1;
    if (d > v && set_float(m, mo[M_STEP_MAX], d) < 0)
        return -1;
    if (get_double(m, mo[M_SLOW], "slow", &v) < 0)
        return -1;
    if (UNLIKELY(d > v)) {
        PyObject *pt0 = PyFloat_FromDouble(t0), *pd = PyFloat_FromDouble(d);
        PyObject *r = NULL;
        if (pt0 && pd)
            r = PyObject_CallMethodObjArgs(m, s_long_step, what, pt0, pd, NULL);
        Py_XDECREF(pt0);
        Py_XDECREF(pd);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* LoopMetrics.add_step(what, t0, d): one step of `d` seconds filed in the
 * histogram, and a step longer than `slow` handed to long_step. */
static inline int
file_step(PyObject *m, const Py_ssize_t *mo, const Hist *h, PyObject *what, double t0, double d)
{
    if (LIKELY(d < h->fine_limit))
        /* int(d * 1e6) for d >= 0, without a call to libm's floor */
        return count_in(SLOT(m, mo[M_FINE]), d > 0.0 ? (Py_ssize_t)(d * 1e6) : 0);
    return file_long_step(m, mo, h, what, t0, d);
}

/* The metrics' `done` counter plus one. */
static inline void
count_done(PyObject *m)
{
    MCORE(m)->done++;
}

/* Whether a task ended cleanly, as note_end tests it: not cancelled
 * (`cancel`, its record, is None), FINISHED, no exception.  1, 0, or -1 on
 * error.  For the ends filed once per task outside the step hook (which
 * has the state in hand already: step_ended). */
static int
clean_finish(const CGet *g_state, const CGet *g_exc, PyObject *task, PyObject *cancel)
{
    if (cancel != Py_None)
        return 0;
    PyObject *state = cget(g_state, task, s_state);
    if (state == NULL)
        return -1;
    int finished = state == s_FINISHED || PyUnicode_Compare(state, s_FINISHED) == 0;
    Py_DECREF(state);
    if (!finished)
        return 0;
    PyObject *exc = cget(g_exc, task, s_exception);
    if (exc == NULL)
        return -1;
    int clean = exc == Py_None;
    Py_DECREF(exc);
    return clean;
}

/* clean_end(task, t1), t1 None if negative. */
static NOINLINE int
call_clean_end(PyObject *clean_end, PyObject *task, double t1)
{
    PyObject *now = t1 >= 0.0 ? PyFloat_FromDouble(t1) : Py_NewRef(Py_None);
    if (now == NULL)
        return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(clean_end, task, now, NULL);
    Py_DECREF(now);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* note_end's clean finish once counted: clean_end(task, t1) if the done
 * ring's budget or a task_unregister hook wants it (tracker.py's
 * ``budget[0] > 0 or hooks.unregister``).  `t1` is the end's time, or
 * negative for None (an end filed on release): its float is made only when
 * clean_end is called, rarely on a server. */
static inline int
keep_clean_end(PyObject *budget, PyObject *hooks, PyObject *clean_end, PyObject *task, double t1)
{
    int want = 0;
    PyObject *b = PyList_CheckExact(budget) && PyList_GET_SIZE(budget) > 0 ? PyList_GET_ITEM(budget, 0) : NULL;
    if (b != NULL) {
        if (LIKELY(PyLong_CheckExact(b))) {
            int overflow;
            long n = PyLong_AsLongAndOverflow(b, &overflow);
            want = overflow > 0 || n > 0;
        }
        else if ((want = PyObject_RichCompareBool(b, zero, Py_GT)) < 0)
            return -1;
    }
    if (!want && (want = hook_on(hooks, HOOK_UNREGISTER, s_unregister)) <= 0)
        return want;
    return call_clean_end(clean_end, task, t1);
}

static NOINLINE int step_ended(StepRun *self, PyObject *task, PyObject *tt, XRec *xr, PyObject *m, PyObject *state, double t1);

/* The accounting after a step: steps.py's _run, from "d = t1 - t0" on. */
static int
account(StepRun *self, PyObject *handle, PyObject *m, PyObject *cb, double t0, double t1)
{
    double d = t1 - t0, v;
    PyObject *task;
    Py_ssize_t *mo = self->m_off;

    MetricsCore *mc = MCORE(m);
    mc->busy += d;
    if (UNLIKELY((v = mc->nested) != 0.0)) {
        /* an eager task ran its first step inside this one (timed there) */
        d = d - v > 0.0 ? d - v : 0.0;
        mc->nested = 0.0;
    }
    if (file_step(m, mo, &self->hist, handle, t0, d) < 0)
        return -1;

    PyObject *tp = (PyObject *)Py_TYPE(cb);
    if (tp != self->step_type && tp != self->wakeup_type)
        return 0;
    task = PyCFunction_Check(cb) ? PyCFunction_GET_SELF(cb) : NULL;
    if (UNLIKELY(task == NULL)) {
        /* a TaskStepMethWrapper: its task is its __self__ */
        PyObject *owner = PyObject_GetAttr(cb, s_self);
        if (owner == NULL)
            return -1;
        Py_DECREF(owner);  /* cb holds it */
        task = owner;
    }
    PyObject *tt = (PyObject *)Py_TYPE(task);
    Times *tm;
    XRec *xr = NULL;
    if (tt == self->cls || tt == self->eager_cls)
        tm = times_of(task);
    else if (tt == (PyObject *)exact_type && (xr = reg_rec(task)) != NULL)
        tm = &xr->t;  /* an exact task of ours: its record, one probe */
    else
        return 0;
    if (UNLIKELY(!(tm->set & F_BIT(F_STEPS)))) {
        PyErr_SetString(PyExc_AttributeError, "_ls_steps is not set");
        return -1;
    }
    tm->v[F_LAST] = t1;
    tm->set |= F_BIT(F_LAST);
    if (UNLIKELY(tm->steps == 0)) {
        /* the others are first written here (tracker.make_track) */
        if (!(tm->set & F_BIT(F_CREATED))) {
            PyErr_SetString(PyExc_AttributeError, "_ls_created is not set");
            return -1;
        }
        tm->v[F_FIRST] = t0 - tm->v[F_CREATED];
        tm->v[F_BUSY] = d;
        tm->v[F_LONGEST] = d;
        tm->steps = 1;
        tm->set = (tm->set & ~FIRST_NONE) | F_BIT(F_FIRST) | F_BIT(F_BUSY) | F_BIT(F_LONGEST);
    }
    else {
        if (UNLIKELY((tm->set & (F_BIT(F_BUSY) | F_BIT(F_LONGEST))) != (F_BIT(F_BUSY) | F_BIT(F_LONGEST)))) {
            PyErr_SetString(PyExc_AttributeError, "_ls_busy or _ls_longest is not set");
            return -1;
        }
        tm->steps++;
        tm->v[F_BUSY] += d;
        if (d > tm->v[F_LONGEST])
            tm->v[F_LONGEST] = d;
    }

    PyObject *state = cget(&self->g_state, task, s_state);
    if (state == NULL)
        return -1;
    if (LIKELY(state == s_PENDING)) {
        Py_DECREF(state);
        return 0;
    }
    return step_ended(self, task, tt, xr, m, state, t1);
}

/* account, for a task whose step just ended it (or whose state is not the
 * interned "PENDING"): its end, filed.  Out of line: once per task, not per
 * step.  Consumes `state`. */
static NOINLINE int
step_ended(StepRun *self, PyObject *task, PyObject *tt, XRec *xr, PyObject *m, PyObject *state, double t1)
{
    Py_ssize_t *to = self->t_off;
    /* asyncio's states are interned: compared by identity first */
    int finished = state == s_FINISHED;
    int pending = !finished && (state == s_PENDING || PyUnicode_Compare(state, s_PENDING) == 0);
    if (!finished && !pending)
        finished = PyUnicode_Compare(state, s_FINISHED) == 0;
    Py_DECREF(state);
    if (pending)
        return 0;
    int clean = 0;
    if (finished && (xr != NULL ? xr->f[E_CANCEL] : SLOT(task, to[T_CANCEL])) == Py_None) {
        PyObject *exc = cget(&self->g_exception, task, s_exception);
        if (exc == NULL)
            return -1;
        clean = exc == Py_None;
        Py_DECREF(exc);
    }
    int rc;
    if (clean) {
        /* note_end's clean finish, inlined; an eager task says its end is
         * recorded, so that its __del__ does not record it again */
        if (xr != NULL)
            Py_XSETREF(xr->f[E_ENDED], Py_NewRef(Py_True));
        else if (tt == self->eager_cls)
            set_slot(task, self->ended_off, Py_NewRef(Py_True));
        count_done(m);
        rc = keep_clean_end(self->budget, self->hooks, self->clean_end, task, t1);
    }
    else {
        PyObject *pt1 = PyFloat_FromDouble(t1);
        PyObject *r = pt1 != NULL ? PyObject_CallFunctionObjArgs(self->step_end, m, task, pt1, NULL) : NULL;
        Py_XDECREF(pt1);
        Py_XDECREF(r);
        rc = r == NULL ? -1 : 0;
    }
    return rc;
}

/* One of the handle's attributes (a new reference): read at its slot's
 * offset when the handle is a Handle, looked up otherwise or when unset (so
 * that the error is Python's own). */
static inline PyObject *
handle_slot(StepRun *self, PyObject *handle, int slots, int i, PyObject *name)
{
    if (slots) {
        PyObject *v = SLOT(handle, self->h_off[i]);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(handle, name);
}

/* Bumped whenever the agent sets or removes a loop's _loopscope_metrics
 * (metrics_moved()) and when a loop a step hook remembers dies (loop_gone,
 * the callback of the weak reference the hook keeps to it): what the step
 * hooks remember is then read again. */
static unsigned long metrics_gen;
static PyObject *loop_gone_cb;

static PyObject *
loop_gone(PyObject *mod, PyObject *wr)
{
    metrics_gen++;
    Py_RETURN_NONE;
}

static PyMethodDef loop_gone_def = {"_loop_gone", loop_gone, METH_O, NULL};

/* The loop's _loopscope_metrics (1 and a new reference in *m, 0 if it has
 * none, -1 on error), as a generic attribute lookup would find it.  `loop`
 * is borrowed from the handle.
 *
 * Why remembered: that lookup searches the loop's class hierarchy, then its
 * instance values, on every step (~200 instructions and a dozen cache
 * lines of the interpreter's).  The last few loops' metrics are kept by the
 * loop's address, with a weak reference to the loop whose callback
 * forgets them all when it dies, so that a new loop at its address is not
 * taken for it; and only until the agent moves any loop's metrics
 * (metrics_gen).  The check reads nothing but the hook's own fields.  Never
 * the loop's __dict__ (own_attr). */
static NOINLINE int loop_metrics_slow(StepRun *self, PyObject *loop, PyObject **m, size_t i);

static inline int
loop_metrics(StepRun *self, PyObject *loop, PyObject **m)
{
    size_t i = ((uintptr_t)loop >> 4) & (SEEN_N - 1);
#ifndef Py_GIL_DISABLED
    if (LIKELY(self->seen_loop[i] == loop && self->seen_gen[i] == metrics_gen)) {
        *m = Py_NewRef(self->seen[2 * i + 1]);
        return 1;
    }
#endif
    return loop_metrics_slow(self, loop, m, i);
}

/* loop_metrics when the loop is not the one remembered at its place. */
static NOINLINE int
loop_metrics_slow(StepRun *self, PyObject *loop, PyObject **m, size_t i)
{
    Py_INCREF(loop);  /* the lookup may run the loop's code, which may drop the handle's */
    int found = get_optional_attr(loop, s_metrics, m);
    if (found == 1 && (PyObject *)Py_TYPE(*m) == self->metrics_cls) {
        unsigned long gen = metrics_gen;
        PyObject *wr = PyWeakref_NewRef(loop, loop_gone_cb);
        if (wr == NULL)
            PyErr_Clear();  /* a loop without weak references: looked up each time */
        else {
            self->seen_loop[i] = NULL;
            Py_XSETREF(self->seen[2 * i], wr);  /* the old one's callback is gone with it */
            Py_XSETREF(self->seen[2 * i + 1], Py_NewRef(*m));
            self->seen_loop[i] = loop;
            self->seen_gen[i] = gen;
        }
    }
    Py_DECREF(loop);
    return found;
}

/* A callback raised: asyncio's own reporting (steps._report); -1 if that
 * raised too.  Out of line: a step that raises is rare, and its code would
 * otherwise share cache lines with every step's. */
static COLD int
report_error(StepRun *self, PyObject *handle)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *rr = value ? PyObject_CallFunctionObjArgs(self->report, handle, value, NULL) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (rr == NULL)
        return -1;
    Py_DECREF(rr);
    return 0;
}

/* Handle._run: steps.py's _run, line for line. */
static PyObject *
steprun_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    StepRun *self = (StepRun *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)) {
        PyErr_SetString(PyExc_TypeError, "_run() takes the handle only");
        return NULL;
    }
    PyObject *handle = args[0];
    /* a Handle's slots at their offsets (a generic attribute lookup each
     * costs more than the rest of a step's accounting) */
    PyObject *ht = (PyObject *)Py_TYPE(handle);
    int slots = ht == self->handle_cls || ht == self->handle_sub;
    if (UNLIKELY(!slots) && PyType_IsSubtype((PyTypeObject *)ht, (PyTypeObject *)self->handle_cls)) {
        Py_XSETREF(self->handle_sub, Py_NewRef(ht));
        slots = 1;
    }
    PyObject *loop = slots ? SLOT(handle, self->h_off[H_LOOP]) : NULL;  /* borrowed: the handle holds it */
    PyObject *m;
    int found;
    if (LIKELY(loop != NULL))
        found = loop_metrics(self, loop, &m);
    else {
        if ((loop = PyObject_GetAttr(handle, s_loop)) == NULL)
            return NULL;
        found = loop_metrics(self, loop, &m);
        Py_DECREF(loop);
    }
    if (found < 0)
        return NULL;
    if (UNLIKELY(found == 0))
        return PyObject_CallOneArg(self->original, handle);
    if (UNLIKELY((PyObject *)Py_TYPE(m) != self->metrics_cls)) {
        /* not a loop of ours after all: asyncio's own behaviour */
        Py_DECREF(m);
        return PyObject_CallOneArg(self->original, handle);
    }
    PyObject *cb = handle_slot(self, handle, slots, H_CALLBACK, s_callback);
    PyObject *cargs = cb ? handle_slot(self, handle, slots, H_ARGS, s_args) : NULL;
    PyObject *ctx = cargs ? handle_slot(self, handle, slots, H_CONTEXT, s_context) : NULL;
    if (ctx == NULL) {
        Py_DECREF(m);
        Py_XDECREF(cb);
        Py_XDECREF(cargs);
        return NULL;
    }
    double t0 = monotonic();
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        if (LIKELY(PyTuple_CheckExact(cargs)))
            r = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(cargs, 0), PyTuple_GET_SIZE(cargs), NULL);
        else if (cargs == Py_None)
            r = PyObject_CallNoArgs(cb);
        else
            r = PyObject_Call(cb, cargs, NULL);
        if (PyContext_Exit(ctx) < 0)
            Py_CLEAR(r);
    }
    Py_DECREF(ctx);
    Py_DECREF(cargs);
    if (LIKELY(r != NULL)) {
        Py_DECREF(r);
    }
    else if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        Py_DECREF(cb);
        Py_DECREF(m);
        return NULL;
    }
    else if (report_error(self, handle) < 0) {
        Py_DECREF(cb);
        Py_DECREF(m);
        return NULL;
    }
    double t1 = monotonic();
    if (account(self, handle, m, cb, t0, t1) < 0) {
        hand_over_error(self->note_error);  /* nothing of ours may ever raise into the loop */
    }
    Py_DECREF(cb);
    Py_DECREF(m);
    Py_RETURN_NONE;
}

static PyObject *
method_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    /* a function-like descriptor, so that Handle._run binds the handle
     * (and a primitive's __init__ the object: PrimInit) */
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

REFS_GC(steprun, StepRun, original, seen[2 * SEEN_N - 1])  /* handle_sub and seen are last */

static int
hist_init(Hist *h, double fine_limit, PyObject *bounds)
{
    PyObject *seq = PySequence_Fast(bounds, "bounds must be a sequence");
    if (seq == NULL)
        return -1;
    Py_ssize_t nb = PySequence_Fast_GET_SIZE(seq);
    if (nb > MAX_BOUNDS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many bounds");
        return -1;
    }
    h->nbounds = nb;
    h->fine_limit = fine_limit;
    for (Py_ssize_t i = 0; i < nb; i++) {
        h->bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (h->bounds[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static int
metrics_offsets(PyObject *metrics_cls, Py_ssize_t *m_off)
{
    if (core_base_check(metrics_cls) < 0)
        return -1;
    for (int i = 0; i < M_N; i++)
        if (member_offset(metrics_cls, m_names[i], &m_off[i]) < 0)
            return -1;
    return 0;
}

static PyObject *
steprun_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"original", "report", "step_type", "wakeup_type", "cls", "eager_cls", "metrics_cls",
                         "handle_cls", "step_end", "clean_end", "budget", "hooks", "note_error", "fine_limit",
                         "bounds", NULL};
    PyObject *original, *report, *step_type, *wakeup_type, *cls, *eager_cls, *metrics_cls, *handle_cls;
    PyObject *step_end, *clean_end, *budget, *hooks, *note_error, *bounds;
    double fine_limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OOOOOOOOOOOOOdO:StepRun", kw, &original, &report, &step_type,
                                     &wakeup_type, &cls, &eager_cls, &metrics_cls, &handle_cls, &step_end,
                                     &clean_end, &budget, &hooks, &note_error, &fine_limit, &bounds))
        return NULL;
    if (!PyType_Check(cls) || !PyType_Check(eager_cls) || !PyType_Check(metrics_cls) || !PyType_Check(handle_cls)
        || !PyType_IsSubtype((PyTypeObject *)eager_cls, (PyTypeObject *)cls)) {
        PyErr_SetString(PyExc_TypeError, "cls, eager_cls, metrics_cls and handle_cls must be classes, eager_cls a subclass of cls");
        return NULL;
    }
    if (!PyList_CheckExact(budget)) {
        PyErr_SetString(PyExc_TypeError, "budget must be a list");
        return NULL;
    }
    if (has_times(cls) < 0)
        return NULL;
    StepRun *self = (StepRun *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = steprun_vectorcall;
    if (hist_init(&self->hist, fine_limit, bounds) < 0 || metrics_offsets(metrics_cls, self->m_off) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    for (int i = 0; i < T_N; i++)
        if (member_offset(cls, t_names[i], &self->t_off[i]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
    for (int i = 0; i < H_N; i++)
        if (member_offset(handle_cls, h_names[i], &self->h_off[i]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
    if (member_offset(eager_cls, "_ls_ended", &self->ended_off) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    task_getters(cls, eager_cls, &self->g_state, &self->g_exception);
    self->original = Py_NewRef(original);
    self->report = Py_NewRef(report);
    self->step_type = Py_NewRef(step_type);
    self->wakeup_type = Py_NewRef(wakeup_type);
    self->cls = Py_NewRef(cls);
    self->eager_cls = Py_NewRef(eager_cls);
    self->metrics_cls = Py_NewRef(metrics_cls);
    self->handle_cls = Py_NewRef(handle_cls);
    self->step_end = Py_NewRef(step_end);
    self->clean_end = Py_NewRef(clean_end);
    self->budget = Py_NewRef(budget);
    self->hooks = Py_NewRef(hooks);
    hooks_layout(hooks);
    self->note_error = Py_NewRef(note_error);
    return (PyObject *)self;
}

static PyTypeObject StepRunType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loopscope.agent._speedups.StepRun",
    .tp_doc = "Handle._run with loopscope's step accounting (see agent/steps.py).",
    .tp_basicsize = sizeof(StepRun),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(StepRun, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = method_descr_get,
    .tp_traverse = (traverseproc)steprun_traverse,
    .tp_clear = (inquiry)steprun_clear,
    .tp_dealloc = gc_dealloc,
    .tp_new = steprun_new,
};

/* ------------------------------------------------------------------------
 * The task registry: every task of loopscope's classes, from its creation to
 * its finaliser, so that a query can list a loop's tasks without pausing it.
 *
 * Why: on 3.14+ asyncio.all_tasks() is one C call that walks every task of
 * the interpreter and builds a set, holding the GIL throughout: 9-14 ms per
 * 100,000 tasks here, the whole of the loop's pause a query was allowed
 * (issue 2: 20 ms at 100,000 tasks).  Copying this table into a list is one
 * C call of 1-3 ms for the same tasks; the rest (which loop, done or not)
 * is read by registry_select a slice at a time, and the GIL changes hands
 * between slices.
 *
 * The table holds borrowed pointers in an open-addressing hash set (linear
 * probing, backward-shift deletion, no tombstones), so adding and removing
 * a task allocates nothing in the common case: a weak reference per task
 * costs ~10 times more (a GC object, and a Python call when it dies).
 *
 * A borrowed pointer must leave before its object is freed.  Every task in
 * the table is an instance of a class whose finaliser removes it first:
 * TrackedTask gets registry_finalize as its tp_finalize (which then calls
 * asyncio's own); DelTrackedTask's __del__ (TaskDel) and EagerTrackedTask's
 * remove the task before anything else.  registry_add refuses any other
 * object.  CPython calls a finaliser once
 * before an object is freed, from dealloc or from the cycle collector; a
 * task resurrected by its finaliser is no longer listed, never dangling.
 * Readers copy the table with the GIL held, so no task is freed under them.
 * Without a GIL (free-threaded builds) the registry is not enabled.
 */

typedef struct {
    PyObject *task;  /* borrowed */
    XRec *rec;       /* owned by the table, or NULL */
} RegEntry;

static RegEntry *reg_slots;          /* NULL until the first task */
static int reg_bits;                 /* the table has 1 << reg_bits slots */
static Py_ssize_t reg_used;
static Py_ssize_t reg_lost;          /* tasks not added (no memory): readers must not trust the table */
static int reg_on;
static destructor reg_base_finalize; /* asyncio.Task's tp_finalize */
static PyTypeObject **reg_del;       /* classes whose __del__ removes the task first */
static int reg_n_del;                /* (two more per install of the agent: a few) */

#define REG_MIN_BITS 10

static inline size_t
reg_index(PyObject *p, int bits)
{
    /* Fibonacci hashing of the address (objects are 16-byte aligned) */
    return (size_t)((((uint64_t)(uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL) >> (64 - bits));
}

static int
reg_resize(int bits)
{
    size_t n = (size_t)1 << bits, mask = n - 1;
    RegEntry *t = PyMem_RawCalloc(n, sizeof(RegEntry));
    if (t == NULL)
        return -1;
    size_t old = reg_slots == NULL ? 0 : (size_t)1 << reg_bits;
    for (size_t i = 0; i < old; i++) {
        PyObject *p = reg_slots[i].task;
        if (p == NULL)
            continue;
        size_t j = reg_index(p, bits);
        while (t[j].task != NULL)
            j = (j + 1) & mask;
        t[j] = reg_slots[i];
    }
    PyMem_RawFree(reg_slots);
    reg_slots = t;
    reg_bits = bits;
    return 0;
}

/* List `p` with its record `rec` (may be NULL): 0, or -1 when the table
 * could not grow (the task is counted lost, `rec` stays the caller's). */
static int
reg_put(PyObject *p, XRec *rec)
{
    if (reg_slots == NULL || (size_t)(reg_used + 1) * 2 > ((size_t)1 << reg_bits)) {
        if (reg_resize(reg_slots == NULL ? REG_MIN_BITS : reg_bits + 1) < 0) {
            reg_lost++;
            return -1;
        }
    }
    size_t mask = ((size_t)1 << reg_bits) - 1, j = reg_index(p, reg_bits);
    while (reg_slots[j].task != NULL) {
        if (reg_slots[j].task == p)
            return rec == NULL || reg_slots[j].rec == rec ? 0 : -1;
        j = (j + 1) & mask;
    }
    reg_slots[j].task = p;
    reg_slots[j].rec = rec;
    reg_used++;
    return 0;
}

static inline void
reg_add(PyObject *p)
{
    (void)reg_put(p, NULL);
}

/* The record kept for `p`, or NULL (not listed, or listed without one).
 * One probe in the usual case: the step hook asks it for every step of an
 * exact task. */
static inline XRec *
reg_rec(PyObject *p)
{
    if (reg_slots == NULL)
        return NULL;
    size_t mask = ((size_t)1 << reg_bits) - 1, i = reg_index(p, reg_bits);
    for (;;) {
        PyObject *q = reg_slots[i].task;
        if (q == p)
            return reg_slots[i].rec;
        if (q == NULL)
            return NULL;
        i = (i + 1) & mask;
    }
}

/* Unlist `p`; its record, now the caller's, is returned (NULL if none). */
static XRec *
reg_remove(PyObject *p)
{
    if (reg_slots == NULL)
        return NULL;
    size_t mask = ((size_t)1 << reg_bits) - 1, i = reg_index(p, reg_bits);
    while (reg_slots[i].task != p) {
        if (reg_slots[i].task == NULL)
            return NULL;  /* not listed (made before the registry, or refused) */
        i = (i + 1) & mask;
    }
    XRec *rec = reg_slots[i].rec;
    /* Backward-shift deletion: move later entries of the run into the hole
     * unless their home slot lies cyclically in (hole, their slot]. */
    for (;;) {
        reg_slots[i].task = NULL;
        reg_slots[i].rec = NULL;
        size_t k = i;
        for (;;) {
            k = (k + 1) & mask;
            PyObject *q = reg_slots[k].task;
            if (q == NULL)
                goto removed;
            size_t h = reg_index(q, reg_bits);
            if (i <= k ? (h <= i || h > k) : (h <= i && h > k))
                break;
        }
        reg_slots[i] = reg_slots[k];
        i = k;
    }
removed:
    reg_used--;
    if (reg_bits > REG_MIN_BITS && (size_t)reg_used * 8 < ((size_t)1 << reg_bits))
        (void)reg_resize(reg_bits - 1);  /* on failure the table just stays larger */
    return rec;
}

static void
registry_finalize(PyObject *self)
{
    reg_remove(self);
    reg_base_finalize(self);
}

static inline int
reg_accepts(PyObject *p)
{
    if (Py_TYPE(p)->tp_finalize == registry_finalize)
        return 1;
    for (int i = reg_n_del - 1; i >= 0; i--)  /* the latest install's first */
        if (PyObject_TypeCheck(p, reg_del[i]))
            return 1;
    return 0;
}

/* registry_enable(base, classes, del_classes): `classes` get
 * registry_finalize; `del_classes` have a __del__ that calls
 * registry_discard first (the caller's promise: tracker.py).  False, and
 * nothing changed, where that cannot be done safely. */
static PyObject *
registry_enable(PyObject *mod, PyObject *args)
{
    PyObject *base, *classes, *dels;
    if (!PyArg_ParseTuple(args, "OO!O!:registry_enable", &base, &PyTuple_Type, &classes, &PyTuple_Type, &dels))
        return NULL;
#ifdef Py_GIL_DISABLED
    Py_RETURN_FALSE;
#else
    if (!PyType_Check(base) || ((PyTypeObject *)base)->tp_finalize == NULL) {
        PyErr_SetString(PyExc_TypeError, "registry_enable: base must be a class with a finaliser");
        return NULL;
    }
    destructor fin = ((PyTypeObject *)base)->tp_finalize;
    if (reg_base_finalize != NULL && reg_base_finalize != fin)
        Py_RETURN_FALSE;  /* another Task class than the one enabled first */
    Py_ssize_t n = PyTuple_GET_SIZE(classes), nd = PyTuple_GET_SIZE(dels);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyTuple_GET_ITEM(classes, i);
        if (!PyType_Check(c) || !(((PyTypeObject *)c)->tp_flags & Py_TPFLAGS_HEAPTYPE)
            || !PyType_IsSubtype((PyTypeObject *)c, (PyTypeObject *)base)
            || (((PyTypeObject *)c)->tp_finalize != fin && ((PyTypeObject *)c)->tp_finalize != registry_finalize))
            Py_RETURN_FALSE;  /* a class with a finaliser of its own */
    }
    int fresh = 0;
    for (Py_ssize_t i = 0; i < nd; i++) {
        PyObject *c = PyTuple_GET_ITEM(dels, i);
        if (!PyType_Check(c) || !(((PyTypeObject *)c)->tp_flags & Py_TPFLAGS_HEAPTYPE)
            || !PyType_IsSubtype((PyTypeObject *)c, (PyTypeObject *)base)
            || PyDict_GetItemString(((PyTypeObject *)c)->tp_dict, "__del__") == NULL)
            Py_RETURN_FALSE;
        int known = 0;
        for (int k = 0; k < reg_n_del; k++)
            known |= reg_del[k] == (PyTypeObject *)c;
        fresh += !known;
    }
    if (fresh > 0) {
        PyTypeObject **grown = PyMem_RawRealloc(reg_del, (size_t)(reg_n_del + fresh) * sizeof(PyTypeObject *));
        if (grown == NULL)
            return PyErr_NoMemory();
        reg_del = grown;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        ((PyTypeObject *)PyTuple_GET_ITEM(classes, i))->tp_finalize = registry_finalize;
    for (Py_ssize_t i = 0; i < nd; i++) {
        PyTypeObject *c = (PyTypeObject *)PyTuple_GET_ITEM(dels, i);
        int known = 0;
        for (int k = 0; k < reg_n_del; k++)
            known |= reg_del[k] == c;
        if (!known)
            reg_del[reg_n_del++] = (PyTypeObject *)Py_NewRef((PyObject *)c);
    }
    reg_base_finalize = fin;
    reg_on = 1;
    Py_RETURN_TRUE;
#endif
}

static void xrec_free(XRec *r);

/* Records freed lately, reused before asking the allocator: a server makes
 * and frees one or two a request, and PyMem_Calloc and PyMem_Free's lines
 * (pymalloc's, then a memset) cost more than the record's own writes.  At
 * most XREC_SPARE are kept (a few kilobytes); free-threaded builds, which
 * do not build this module, would need a lock. */
#define XREC_SPARE 64
static XRec *xrec_spare[XREC_SPARE];
static int xrec_nspare;

static XRec *
xrec_alloc(void)
{
    if (xrec_nspare > 0) {
        XRec *r = xrec_spare[--xrec_nspare];
        memset(r, 0, sizeof(XRec));
        return r;
    }
    return PyMem_Calloc(1, sizeof(XRec));
}

/* A record never filled (its task's construction failed) given back. */
static void
xrec_drop(XRec *r)
{
    if (xrec_nspare < XREC_SPARE)
        xrec_spare[xrec_nspare++] = r;
    else
        PyMem_Free(r);
}

static PyObject *
registry_discard(PyObject *mod, PyObject *task)
{
    XRec *r = reg_remove(task);
    if (r != NULL)
        xrec_free(r);  /* (only exact tasks have one, and their finaliser unlists them) */
    Py_RETURN_NONE;
}

static PyObject *
registry_add(PyObject *mod, PyObject *task)
{
    if (!reg_on || !reg_accepts(task)) {
        PyErr_Format(PyExc_TypeError, "the registry takes loopscope's tasks only, not a %.100s", Py_TYPE(task)->tp_name);
        return NULL;
    }
    reg_add(task);
    Py_RETURN_NONE;
}

static PyObject *
registry_tasks(PyObject *mod, PyObject *unused)
{
    PyObject *out = PyList_New(reg_used);
    if (out == NULL)
        return NULL;
    size_t n = reg_slots == NULL ? 0 : (size_t)1 << reg_bits;
    Py_ssize_t k = 0;
    for (size_t i = 0; i < n && k < reg_used; i++)
        if (reg_slots[i].task != NULL)
            PyList_SET_ITEM(out, k++, Py_NewRef(reg_slots[i].task));
    return out;
}

/* registry_select(tasks, start, stop, loop, done) -> list: the tasks of
 * tasks[start:stop] whose _loop is `loop` and whose done(), called through
 * the `done` descriptor, is false.  What taskindex._of_loop needs, a slice
 * at a time so that the GIL changes hands between slices: in Python (even
 * as map/compress) it cost ~280 ns per task, three times all_tasks' own. */
static PyObject *
registry_select(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "registry_select(tasks: list, start, stop, loop, done)");
        return NULL;
    }
    PyObject *tasks = args[0], *loop = args[3], *done = args[4];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || stop == -1) && PyErr_Occurred())
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = start < 0 ? 0 : start; i < stop && i < PyList_GET_SIZE(tasks); i++) {
        PyObject *t = Py_NewRef(PyList_GET_ITEM(tasks, i));
        PyObject *l = PyObject_GetAttr(t, s_loop);
        int keep = 0;
        if (l == NULL)
            PyErr_Clear();  /* torn down under us: not listed */
        else if (l == loop) {
            PyObject *d = PyObject_Vectorcall(done, &t, 1, NULL);
            if (d == NULL)
                PyErr_Clear();
            else {
                keep = d == Py_False;
                Py_DECREF(d);
            }
        }
        Py_XDECREF(l);
        if (keep && PyList_Append(out, t) < 0) {
            Py_DECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
    }
    return out;
}

static PyObject *
registry_state(PyObject *mod, PyObject *unused)
{
    return Py_BuildValue("(inni)", reg_on, reg_used, reg_lost, reg_bits);
}

static PyObject *eager_init_install(PyObject *mod, PyObject *args);
static PyObject *exact_enable(PyObject *mod, PyObject *args);
static PyObject *exact_disable(PyObject *mod, PyObject *unused);
static PyObject *exact_has(PyObject *mod, PyObject *task);
static PyObject *exact_view(PyObject *mod, PyObject *cls);

static PyObject *code_cache_clear(PyObject *mod, PyObject *unused);

static PyObject *
metrics_moved(PyObject *mod, PyObject *unused)
{
    metrics_gen++;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"share_module", share_module, METH_VARARGS,
     "share_module(cls, base) -> bool: cls names base's module as its own (see _speedups.c)."},
    {"task_base", task_base, METH_O,
     "task_base(asyncio.Task) -> the class with loopscope's per-step numbers as C fields (None: made for another base)."},
    {"metrics_moved", metrics_moved, METH_NOARGS,
     "metrics_moved(): a loop's _loopscope_metrics was set or removed (the step hooks read it again)."},
    {"registry_enable", registry_enable, METH_VARARGS,
     "registry_enable(base, classes, del_base) -> bool: list tasks of these classes from now on."},
    {"registry_add", registry_add, METH_O, "registry_add(task): list one of loopscope's tasks."},
    {"registry_discard", registry_discard, METH_O, "registry_discard(task): the first thing a listed task's __del__ does."},
    {"registry_tasks", registry_tasks, METH_NOARGS, "registry_tasks() -> list: every listed task, in one call."},
    {"registry_select", (PyCFunction)(void (*)(void))registry_select, METH_FASTCALL,
     "registry_select(tasks, start, stop, loop, done) -> list: a slice's unfinished tasks of loop."},
    {"registry_state", registry_state, METH_NOARGS, "registry_state() -> (on, listed, lost, table bits)."},
    {"code_cache_clear", code_cache_clear, METH_NOARGS,
     "code_cache_clear(): forget the creation-site verdicts read from tracker._code_skip (it was emptied)."},
    {"eager_init_install", eager_init_install, METH_VARARGS,
     "eager_init_install(base, init) -> bool: init.cls's instances are initialised by init from now on."},
    {"exact_enable", exact_enable, METH_VARARGS,
     "exact_enable(base, init, record_cancel, note_error) -> bool: init(coro, ...) makes exact tasks of base, recorded."},
    {"exact_disable", exact_disable, METH_NOARGS, "exact_disable() -> int: exact tasks off, their records dropped."},
    {"exact_has", exact_has, METH_O, "exact_has(task) -> bool: an exact task loopscope keeps a record of."},
    {"exact_view", exact_view, METH_O, "exact_view(cls) -> bool: cls(...) makes exact eager tasks while they are on."},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------------
 * Track: tracker.make_track's track(task, loop, f), compiled.
 *
 * Why: it runs once per task made through loopscope's factory, and task
 * tracking has a budget of its own (issue 2: 1.25x on a task-spawning
 * benchmark).  In Python its attribute stores, frame walk and calls are
 * about a quarter of a trivial task's whole cost.  The same lines in C: the
 * slots written at fixed offsets, the frame's code compared by identity, the
 * cached per-code verdict read from the same dict the Python side fills.
 * Anything uncommon (a code not yet judged, a parent's first child, a task
 * of another class) calls back into the Python helpers the Python track
 * uses, so both record exactly the same.
 */

enum { K_CANCEL, K_CODE, K_LASTI, K_LINK, K_PLINK, K_N };
static const char *k_names[K_N] = {"_ls_cancel", "_ls_code", "_ls_lasti", "_ls_link", "_ls_plink"};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *cls;           /* tracker.task_class: every task tracked is one */
    PyObject *skip;          /* tracker._code_skip: id(code) -> (code, skipped) */
    PyObject *first_user;    /* tracker._first_user_frame(f) */
    PyObject *create_code;   /* asyncio.create_task's code */
    PyObject *ours_code;     /* spawn.create_task's code */
    PyObject *current_task;  /* tracker._current_task(loop) */
    PyObject *link_of;       /* tracker.link_of(parent) */
    PyObject *bump;          /* the factory's counter.__next__ */
    PyObject *hooks;         /* loopscope.hooks.HOOKS: .register, .call_register */
    PyObject *note_error;
    int timed;
    Py_ssize_t off[K_N];
} Track;

static PyObject *s_register, *s_call_register;

/* The verdicts last read from `skip`, by code object, in a small
 * direct-mapped table: a hit costs no int object for the key and no dict
 * lookup (a walk reads one to three codes per task, on every creation).
 * Its entries hold their codes (at most CC_SIZE of them; codes live as long
 * as their functions anyway), so an address in it is never a dead code's.
 * Emptied with `skip` (code_cache_clear, tracker.skip_for_task_sites), and
 * when a walk reads another `skip` than the one the table was filled from.
 * Free-threaded builds read `skip` every time.
 * An entry also keeps the last instruction offset recorded for a creation
 * site in its code, as an int object (lasti_of): a site creates its tasks
 * from one offset, whose int every record of it then shares, where each
 * would make and free one (large offsets are not cached by CPython). */
#define CC_BITS 8
#define CC_SIZE (1 << CC_BITS)
static struct {
    PyObject *code;
    int user;
    int lasti_v;       /* lasti's value */
    PyObject *lasti;   /* held, or NULL */
} code_cache[CC_SIZE];
static PyObject *code_cache_skip;  /* the `skip` it was filled from (held) */

static inline size_t
cc_index(PyObject *p)
{
    return (size_t)((((uint64_t)(uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL) >> (64 - CC_BITS));
}

static PyObject *
code_cache_clear(PyObject *mod, PyObject *unused)
{
    for (int i = 0; i < CC_SIZE; i++) {
        Py_CLEAR(code_cache[i].code);
        Py_CLEAR(code_cache[i].lasti);
    }
    Py_CLEAR(code_cache_skip);
    Py_RETURN_NONE;
}

/* Whether frames of `code` are the user's (1), skipped (0), or not judged
 * yet (-2); -1 on error. */
static int
code_verdict(PyObject *skip, PyObject *code)
{
#ifndef Py_GIL_DISABLED
    if (skip != code_cache_skip) {
        Py_XDECREF(code_cache_clear(NULL, NULL));
        code_cache_skip = Py_NewRef(skip);
    }
    size_t i = cc_index(code);
    if (code_cache[i].code == code)
        return code_cache[i].user;
#endif
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL)
        return -1;
    PyObject *e = PyDict_GetItemWithError(skip, key);  /* borrowed */
    Py_DECREF(key);
    if (e == NULL)
        return PyErr_Occurred() ? -1 : -2;
    if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 2 || PyTuple_GET_ITEM(e, 0) != code)
        return -2;
    int user = PyTuple_GET_ITEM(e, 1) == Py_False;
#ifndef Py_GIL_DISABLED
    Py_XSETREF(code_cache[i].code, Py_NewRef(code));
    Py_CLEAR(code_cache[i].lasti);
    code_cache[i].user = user;
#endif
    return user;
}

/* The creation site's instruction offset in `site` as an int (a new
 * reference), shared through the code's entry in code_cache while the site
 * stays the same. */
static PyObject *
lasti_of(PyObject *site)
{
    int lasti = PyFrame_GetLasti((PyFrameObject *)site);
#ifndef Py_GIL_DISABLED
    PyCodeObject *code = PyFrame_GetCode((PyFrameObject *)site);
    size_t i = cc_index((PyObject *)code);
    Py_DECREF(code);  /* the frame holds it: compared by address only */
    if (code_cache[i].code == (PyObject *)code) {
        if (code_cache[i].lasti != NULL && code_cache[i].lasti_v == lasti)
            return Py_NewRef(code_cache[i].lasti);
        PyObject *v = PyLong_FromLong(lasti);
        if (v != NULL) {
            Py_XSETREF(code_cache[i].lasti, Py_NewRef(v));
            code_cache[i].lasti_v = lasti;
        }
        return v;
    }
#endif
    return PyLong_FromLong(lasti);
}

/* `f` or the first of its callers whose code is not skipped (tracker.py's
 * _first_user_frame): a new reference, or Py_None.  Codes already judged
 * are read from `skip` (id(code) -> (code, skipped)), the dict the Python
 * side fills; at the first code not yet judged the Python helper takes the
 * rest of the walk, and judges it. */
static PyObject *
user_frame(PyObject *skip, PyObject *first_user, PyObject *f)
{
    Py_XINCREF(f);
    while (f != NULL) {
        PyObject *code = (PyObject *)PyFrame_GetCode((PyFrameObject *)f);
        int user = code_verdict(skip, code);
        Py_DECREF(code);
        if (user == -1) {
            Py_DECREF(f);
            return NULL;
        }
        if (user == -2)
            break;  /* not judged yet */
        if (user)
            return f;
        PyObject *back = (PyObject *)PyFrame_GetBack((PyFrameObject *)f);
        Py_DECREF(f);
        f = back;
    }
    if (f == NULL)
        Py_RETURN_NONE;
    PyObject *r = PyObject_CallOneArg(first_user, f);
    Py_DECREF(f);
    if (r != NULL && r != Py_None && !PyFrame_Check(r)) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "_first_user_frame returned a non-frame");
        return NULL;
    }
    return r;
}

/* The user frame a walk from `f` ends at (a new reference), or Py_None. */
static PyObject *
site_frame(Track *self, PyObject *f)
{
    PyObject *code = (PyObject *)PyFrame_GetCode((PyFrameObject *)f);
    int creator = code == self->create_code || code == self->ours_code;
    Py_DECREF(code);
    if (!creator)
        return user_frame(self->skip, self->first_user, f);
    /* asyncio.create_task (or ours in its place): the user is next */
    PyObject *back = (PyObject *)PyFrame_GetBack((PyFrameObject *)f);
    if (back == NULL)
        Py_RETURN_NONE;
    PyObject *r = user_frame(self->skip, self->first_user, back);
    Py_DECREF(back);
    return r;
}

/* What a task created now on `loop` records of its parent, the running task
 * (tracker.py's Tracker.parent_link): a new reference, Py_None for none.
 * A parent of class `cls` keeps the link in its slot at `plink_off` once
 * made; `link_of` makes it (its first child, or a parent not of ours). */
static PyObject *
parent_link(PyObject *current_task, PyObject *link_of, PyObject *cls, Py_ssize_t plink_off, PyObject *loop)
{
    PyObject *parent = PyObject_CallOneArg(current_task, loop);
    if (parent == NULL)
        return NULL;
    PyObject *link;
    XRec *xr;
    if (parent == Py_None)
        link = Py_NewRef(Py_None);
    else if (PyObject_TypeCheck(parent, (PyTypeObject *)cls) && SLOT(parent, plink_off) != NULL)
        link = Py_NewRef(SLOT(parent, plink_off));
    else if (Py_TYPE(parent) == exact_type && (xr = reg_rec(parent)) != NULL && xr->f[E_PLINK] != NULL)
        link = Py_NewRef(xr->f[E_PLINK]);  /* an exact parent's, kept in its record */
    else
        link = PyObject_CallOneArg(link_of, parent);
    Py_DECREF(parent);
    return link;
}

/* The record's field K_i set to `v` (stolen; NULL: failed): the slot of a
 * TrackedTask, or the field of an exact task's record `xr`. */
static const int k_field[K_N] = {E_CANCEL, E_CODE, E_LASTI, E_LINK, E_PLINK};

static inline int
k_set(Track *self, PyObject *task, XRec *xr, int i, PyObject *v)
{
    if (xr == NULL)
        return set_slot(task, self->off[i], v);
    if (v == NULL)
        return -1;
    Py_XSETREF(xr->f[k_field[i]], v);
    return 0;
}

static int
track(Track *self, PyObject *task, PyObject *loop, PyObject *f)
{
    XRec *xr = NULL;
    if (!PyFrame_Check(f)) {
        PyErr_SetString(PyExc_TypeError, "track() needs a frame");
        return -1;
    }
    if (Py_TYPE(task) == exact_type && exact_init != NULL) {
        /* an exact task (see "Exact tasks"): its record, listed beside it */
        if ((xr = xrec_alloc()) == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (reg_put(task, xr) < 0) {
            xrec_drop(xr);
            return 0;  /* no memory for the table: made, not recorded (counted lost) */
        }
        xr->owner = Py_NewRef(exact_init);
        xr->f[E_NAME_CELL] = Py_NewRef(Py_None);  /* TrackedTask's class attribute */
    }
    else if (!PyObject_TypeCheck(task, (PyTypeObject *)self->cls)) {
        PyErr_Format(PyExc_TypeError, "track() got a %.100s, not one of loopscope's tasks", Py_TYPE(task)->tp_name);
        return -1;
    }
    else if (reg_on && reg_accepts(task))
        reg_add(task);
    if (k_set(self, task, xr, K_CANCEL, Py_NewRef(Py_None)) < 0)
        return -1;
    Times *tm = xr != NULL ? &xr->t : times_of(task);
    if (self->timed) {
        tm->steps = 0;
        tm->set |= F_BIT(F_STEPS) | F_BIT(F_FIRST) | FIRST_NONE;
    }
    PyObject *site = site_frame(self, f);
    if (site == NULL)
        return -1;
    PyObject *code, *lasti;
    if (site == Py_None) {
        code = Py_NewRef(Py_None);  /* no user frame: dropped by readers */
        lasti = Py_NewRef(Py_None);
    }
    else {
        code = (PyObject *)PyFrame_GetCode((PyFrameObject *)site);
        lasti = lasti_of(site);
    }
    Py_DECREF(site);
    if (lasti == NULL) {
        Py_DECREF(code);
        return -1;
    }
    PyObject *link = parent_link(self->current_task, self->link_of, self->cls, self->off[K_PLINK], loop);
    if (link == NULL) {
        Py_DECREF(code);
        Py_DECREF(lasti);
        return -1;
    }
    k_set(self, task, xr, K_CODE, code);
    k_set(self, task, xr, K_LASTI, lasti);
    tm->v[F_CREATED] = monotonic();
    tm->set |= F_BIT(F_CREATED);
    k_set(self, task, xr, K_LINK, link);  /* last: origin_of reads it first */
    PyObject *n = PyObject_CallNoArgs(self->bump);
    if (n == NULL)
        return -1;
    Py_DECREF(n);
    int want = hook_on(self->hooks, HOOK_REGISTER, s_register);
    if (want < 0)
        return -1;
    if (want) {
        PyObject *r = PyObject_CallMethodOneArg(self->hooks, s_call_register, task);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
track_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Track *self = (Track *)op;
    if (PyVectorcall_NARGS(nargsf) != 3 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)) {
        PyErr_SetString(PyExc_TypeError, "track() takes (task, loop, frame)");
        return NULL;
    }
    if (track(self, args[0], args[1], args[2]) < 0)
        hand_over_error(self->note_error);  /* never into the program */
    Py_RETURN_NONE;
}

REFS_GC(track, Track, cls, note_error)

static PyObject *
track_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"cls", "skip", "first_user", "create_code", "ours_code", "current_task", "link_of",
                         "bump", "hooks", "note_error", "timed", NULL};
    PyObject *cls, *skip, *first_user, *create_code, *ours_code, *current_task, *link_of, *bumpf, *hooks, *note_error;
    int timed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OOOOOOOOOOp:Track", kw, &cls, &skip, &first_user, &create_code,
                                     &ours_code, &current_task, &link_of, &bumpf, &hooks, &note_error, &timed))
        return NULL;
    if (!PyType_Check(cls) || !PyDict_CheckExact(skip)) {
        PyErr_SetString(PyExc_TypeError, "cls must be a class and skip a dict");
        return NULL;
    }
    if (has_times(cls) < 0)
        return NULL;
    Track *self = (Track *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = track_vectorcall;
    self->timed = timed;
    for (int i = 0; i < K_N; i++)
        if (member_offset(cls, k_names[i], &self->off[i]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
    self->cls = Py_NewRef(cls);
    self->skip = Py_NewRef(skip);
    self->first_user = Py_NewRef(first_user);
    self->create_code = Py_NewRef(create_code);
    self->ours_code = Py_NewRef(ours_code);
    self->current_task = Py_NewRef(current_task);
    self->link_of = Py_NewRef(link_of);
    self->bump = Py_NewRef(bumpf);
    self->hooks = Py_NewRef(hooks);
    hooks_layout(hooks);
    self->note_error = Py_NewRef(note_error);
    return (PyObject *)self;
}

static PyTypeObject TrackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loopscope.agent._speedups.Track",
    .tp_doc = "tracker.make_track's track(task, loop, frame), compiled.",
    .tp_basicsize = sizeof(Track),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Track, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)track_traverse,
    .tp_clear = (inquiry)track_clear,
    .tp_dealloc = gc_dealloc,
    .tp_new = track_new,
};

/* ------------------------------------------------------------------------
 * TaskDel: tracker.py's DelTrackedTask.__del__, compiled.
 *
 * Why: on loops whose steps the step hook does not see (uvloop, or metrics
 * off) a task's end is recorded when it is released, and a Python __del__
 * per task costs more than the rest of the end.  The type is a method
 * descriptor, so the finaliser calls it with the task and no bound method.
 */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *cls;          /* tracker.task_class: _ls_cancel's offset */
    PyObject *metrics;      /* tracker.metrics: id(loop) -> LoopMetrics */
    PyObject *metrics_cls;  /* LoopMetrics: checked before done is counted */
    PyObject *note_end;     /* tracker.note_end(m, task, now) */
    PyObject *clean_end;    /* tracker.clean_end(task, None) */
    PyObject *budget;       /* the done ring's one-element budget */
    PyObject *hooks;        /* .unregister */
    PyObject *note_error;
    PyObject *ended_cls;    /* EagerTrackedTask for its __del__, else None */
    destructor finalize;    /* asyncio.Task's own finaliser */
    CGet g_state, g_exception;
    Py_ssize_t cancel_off, ended_off;
} TaskDel;

static PyObject *s_ls_m;

/* The loop's metrics for `task` (a new reference, maybe Py_None). */
static PyObject *
metrics_of(TaskDel *self, PyObject *task)
{
    PyObject *m = PyObject_GetAttr(task, s_ls_m);  /* the per-loop class's */
    if (m == NULL || m != Py_None)
        return m;
    Py_DECREF(m);
    PyObject *loop = PyObject_GetAttr(task, s_loop);
    if (loop == NULL)
        return NULL;
    PyObject *key = PyLong_FromVoidPtr(loop);
    Py_DECREF(loop);
    if (key == NULL)
        return NULL;
    m = PyDict_GetItemWithError(self->metrics, key);
    Py_DECREF(key);
    if (m == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    return Py_NewRef(m);
}

/* note_end's clean finish: counted, kept if the budget or a hook wants it. */
static int
clean_release(TaskDel *self, PyObject *task, PyObject *m)
{
    if (m != Py_None) {
        if ((PyObject *)Py_TYPE(m) != self->metrics_cls) {
            PyErr_SetString(PyExc_TypeError, "loop metrics of an unexpected type");
            return -1;
        }
        count_done(m);
    }
    return keep_clean_end(self->budget, self->hooks, self->clean_end, task, -1.0);
}

static int
record_release(TaskDel *self, PyObject *task)
{
    if (!PyObject_TypeCheck(task, (PyTypeObject *)self->cls)) {
        PyErr_SetString(PyExc_TypeError, "__del__ of a task not of loopscope's class");
        return -1;
    }
    if (self->ended_off >= 0 && PyObject_TypeCheck(task, (PyTypeObject *)self->ended_cls)
        && SLOT(task, self->ended_off) == Py_True)
        return 0;  /* an eager task whose end was recorded when it finished */
    PyObject *m = metrics_of(self, task);
    if (m == NULL)
        return -1;
    int clean = clean_finish(&self->g_state, &self->g_exception, task, SLOT(task, self->cancel_off));
    if (clean < 0) {
        Py_DECREF(m);
        return -1;
    }
    int rc;
    if (clean) {
        rc = clean_release(self, task, m);
    }
    else {
        PyObject *now = PyFloat_FromDouble(monotonic());
        PyObject *r = now ? PyObject_CallFunctionObjArgs(self->note_end, m, task, now, NULL) : NULL;
        Py_XDECREF(now);
        Py_XDECREF(r);
        rc = r == NULL ? -1 : 0;
    }
    Py_DECREF(m);
    return rc;
}

static PyObject *
taskdel_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TaskDel *self = (TaskDel *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)) {
        PyErr_SetString(PyExc_TypeError, "__del__() takes the task only");
        return NULL;
    }
    PyObject *task = args[0];
    reg_remove(task);  /* first: the table's pointer must not outlive the task */
    if (record_release(self, task) < 0)
        hand_over_error(self->note_error);  /* never into the program */
    if (PyObject_TypeCheck(task, (PyTypeObject *)self->cls))
        self->finalize(task);  /* "Task was destroyed but it is pending!" and the rest */
    Py_RETURN_NONE;
}

REFS_GC(taskdel, TaskDel, cls, ended_cls)

static PyObject *
taskdel_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"cls", "base", "metrics", "metrics_cls", "note_end", "clean_end", "budget", "hooks",
                         "note_error", "ended_cls", NULL};
    PyObject *cls, *base, *metrics, *metrics_cls, *note_end, *clean_end, *budget, *hooks, *note_error;
    PyObject *ended_cls;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OOOOOOOOOO:TaskDel", kw, &cls, &base, &metrics, &metrics_cls,
                                     &note_end, &clean_end, &budget, &hooks, &note_error, &ended_cls))
        return NULL;
    if (ended_cls != Py_None && (!PyType_Check(ended_cls) || !PyType_IsSubtype((PyTypeObject *)ended_cls, (PyTypeObject *)cls))) {
        PyErr_SetString(PyExc_TypeError, "ended_cls must be None or a subclass of cls");
        return NULL;
    }
    if (!PyType_Check(cls) || !PyType_Check(base) || !PyType_Check(metrics_cls)
        || !PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)base)
        || ((PyTypeObject *)base)->tp_finalize == NULL) {
        PyErr_SetString(PyExc_TypeError, "cls must be a class derived from base, which has a finaliser");
        return NULL;
    }
    if (!PyDict_CheckExact(metrics) || !PyList_CheckExact(budget)) {
        PyErr_SetString(PyExc_TypeError, "metrics must be a dict and budget a list");
        return NULL;
    }
    TaskDel *self = (TaskDel *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = taskdel_vectorcall;
    self->finalize = ((PyTypeObject *)base)->tp_finalize;
    self->ended_off = -1;
    if (member_offset(cls, "_ls_cancel", &self->cancel_off) < 0 || core_base_check(metrics_cls) < 0
        || (ended_cls != Py_None && member_offset(ended_cls, "_ls_ended", &self->ended_off) < 0)) {
        Py_DECREF(self);
        return NULL;
    }
    task_getters(cls, ended_cls != Py_None ? ended_cls : NULL, &self->g_state, &self->g_exception);
    self->ended_cls = Py_NewRef(ended_cls);
    self->cls = Py_NewRef(cls);
    self->metrics = Py_NewRef(metrics);
    self->metrics_cls = Py_NewRef(metrics_cls);
    self->note_end = Py_NewRef(note_end);
    self->clean_end = Py_NewRef(clean_end);
    self->budget = Py_NewRef(budget);
    self->hooks = Py_NewRef(hooks);
    hooks_layout(hooks);
    self->note_error = Py_NewRef(note_error);
    return (PyObject *)self;
}

static PyTypeObject TaskDelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loopscope.agent._speedups.TaskDel",
    .tp_doc = "DelTrackedTask.__del__ (agent/tracker.py), compiled.",
    .tp_basicsize = sizeof(TaskDel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(TaskDel, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = method_descr_get,
    .tp_traverse = (traverseproc)taskdel_traverse,
    .tp_clear = (inquiry)taskdel_clear,
    .tp_dealloc = gc_dealloc,
    .tp_new = taskdel_new,
};

/* ------------------------------------------------------------------------
 * EagerInit: tracker.py's EagerTrackedTask.__init__, compiled.
 *
 * Why: servers make an eager task per request (aiohttp on 3.12+), and in
 * Python this constructor, with the timing of the first step it runs, cost
 * more than the issue's whole budget for a request under load (3 % of
 * ~31 us on 3.14).  The same lines in C, calling back into the same Python
 * helpers for what is uncommon (a code not yet judged, a parent's first
 * child, a slow step, a finish that is not clean).
 *
 * It is installed as the class's tp_init (eager_init_install), not as an
 * __init__ attribute: a descriptor is called with the arguments repacked,
 * and asyncio's Task.__init__ would need them packed back into a tuple and
 * a dict.  The class keeps its Python __init__ in its dict, which is what a
 * subclass of it gets and what introspection shows; the state is the
 * class's `_ls_eager_init` attribute.
 */


typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;  /* calling it makes an exact task (exact_new) */
    PyObject *cls;          /* EagerTrackedTask */
    PyObject *track_cls;    /* TrackedTask: a parent's _ls_plink */
    PyObject *skip;         /* tracker._code_skip */
    PyObject *first_user;   /* tracker._first_user_frame(f) */
    PyObject *current_task; /* tracker._current_task(loop) */
    PyObject *link_of;      /* tracker.link_of(parent) */
    PyObject *running_loop; /* asyncio._get_running_loop */
    PyObject *metrics_cls;  /* LoopMetrics */
    PyObject *note_end;     /* tracker.note_end(m, task, now) */
    PyObject *clean_end;    /* tracker.clean_end(task, now) */
    PyObject *budget;       /* the done ring's one-element budget */
    PyObject *hooks;        /* .register, .call_register, .unregister */
    PyObject *note_error;
    PyObject *metrics;      /* tracker.metrics: id(loop) -> LoopMetrics (exact_release) */
    PyObject *seen_wr;      /* a weak reference to the loop last seen (its callback: loop_gone) */
    PyObject *seen_m;       /* and its metrics */
    PyObject *seen_loop;    /* borrowed, compared only: that loop, while seen_gen is metrics_gen */
    unsigned long seen_gen;
    int name_cell;          /* tracker._EAGER_NAME_CELL */
    Hist hist;
    CGet g_state, g_exception, g_qualname;  /* a task's _state, _exception; a coroutine's __qualname__ */
    Py_ssize_t off[E_N];
    Py_ssize_t plink_off;   /* _ls_plink in track_cls */
    Py_ssize_t m_off[M_N];
} EagerInit;

static PyTypeObject EagerInitType;
static PyObject *exact_new(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames);
static PyObject *exact_build(EagerInit *e, PyObject *targs, PyObject *kwds, PyObject *from);
static PyObject *s_eager_init, *s_coro, *s_loop_kw, *s_eager_start, *s_qualname, *s_is_running, *s_init;
static initproc eager_base_init;  /* asyncio.Task's own __init__ */

/* The recording before the task's first step: the slots, and the loop's
 * metrics if that step runs now (*m: a new reference, or NULL). */
/* One of the eager record's fields set to `v` (stolen; NULL: failed):
 * the slot of an EagerTrackedTask, or the field of an exact task's record
 * `xr`. */
static ALWAYS_INLINE int
e_set(EagerInit *e, PyObject *task, XRec *xr, int i, PyObject *v)
{
    if (xr == NULL)
        return set_slot(task, e->off[i], v);
    if (v == NULL)
        return -1;
    Py_XSETREF(xr->f[i], v);
    return 0;
}

static ALWAYS_INLINE PyObject *
e_get(EagerInit *e, PyObject *task, XRec *xr, int i)
{
    return xr != NULL ? xr->f[i] : SLOT(task, e->off[i]);
}

/* The loop's metrics (a new reference in *m, NULL if it has none of ours),
 * looked up, and remembered as loop_metrics_slow remembers them. */
static NOINLINE int
eager_metrics_slow(EagerInit *e, PyObject *loop, PyObject **m)
{
    unsigned long gen = metrics_gen;
    if (get_optional_attr(loop, s_metrics, m) < 0)
        return -1;
    if (*m == NULL)
        return 0;
    if ((PyObject *)Py_TYPE(*m) != e->metrics_cls) {
        Py_CLEAR(*m);  /* not a loop of ours after all */
        return 0;
    }
    PyObject *wr = PyWeakref_NewRef(loop, loop_gone_cb);
    if (wr == NULL)
        PyErr_Clear();  /* a loop without weak references: looked up each time */
    else {
        e->seen_loop = NULL;
        Py_XSETREF(e->seen_wr, wr);
        Py_XSETREF(e->seen_m, Py_NewRef(*m));
        e->seen_loop = loop;
        e->seen_gen = gen;
    }
    return 0;
}

static ALWAYS_INLINE int
eager_record(EagerInit *e, PyObject *task, XRec *xr, PyObject *args, PyObject *kwds, PyObject *from, PyObject **m)
{
    if (xr == NULL) {
        if (!PyObject_TypeCheck(task, (PyTypeObject *)e->cls)) {
            PyErr_Format(PyExc_TypeError, "EagerInit got a %.100s, not one of loopscope's eager tasks", Py_TYPE(task)->tp_name);
            return -1;
        }
        if (reg_on && reg_accepts(task))
            reg_add(task);
    }
    /* borrowed from args and kwds, which the caller holds */
    PyObject *coro = PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
    PyObject *loop = NULL, *start = NULL;
    if (kwds != NULL) {
        if ((coro == NULL && (coro = PyDict_GetItemWithError(kwds, s_coro)) == NULL && PyErr_Occurred())
            || ((loop = PyDict_GetItemWithError(kwds, s_loop_kw)) == NULL && PyErr_Occurred())
            || ((start = PyDict_GetItemWithError(kwds, s_eager_start)) == NULL && PyErr_Occurred()))
            return -1;
    }
    PyObject *running_loop = PyObject_CallNoArgs(e->running_loop);
    if (running_loop == NULL)
        return -1;
    if (loop == NULL || loop == Py_None)
        loop = running_loop;
    Py_INCREF(loop);
    int running = loop == running_loop && loop != Py_None;
    Py_DECREF(running_loop);
    int rc = -1;
    PyObject *name = NULL;
    Times *tm = xr != NULL ? &xr->t : times_of(task);
    tm->steps = 0;
    tm->v[F_BUSY] = tm->v[F_LONGEST] = 0.0;
    tm->set |= F_BIT(F_STEPS) | F_BIT(F_BUSY) | F_BIT(F_LONGEST) | F_BIT(F_FIRST) | FIRST_NONE;
    if (e_set(e, task, xr, E_CANCEL, Py_NewRef(Py_None)) < 0 || e_set(e, task, xr, E_ENDED, Py_NewRef(Py_False)) < 0)
        goto done;
    if (coro != NULL) {
        if (e->g_qualname.get != NULL && Py_IS_TYPE(coro, &PyCoro_Type)) {
            if ((name = e->g_qualname.get(coro, e->g_qualname.closure)) == NULL)
                goto done;
        }
        else if (get_optional_attr(coro, s_qualname, &name) < 0)
            goto done;
    }
    if (e_set(e, task, xr, E_CORO_NAME, name != NULL ? name : Py_NewRef(Py_None)) < 0)
        goto done;
    PyObject *cell = e->name_cell ? PyList_New(1) : Py_NewRef(Py_None);
    if (cell == NULL)
        goto done;
    if (e->name_cell)
        PyList_SET_ITEM(cell, 0, Py_NewRef(Py_None));
    e_set(e, task, xr, E_NAME_CELL, cell);
    /* the caller's frame: what _getframe(1) is in the Python __init__,
     * unless the caller named it (EagerInit.at) */
    PyObject *site = user_frame(e->skip, e->first_user, from != NULL ? from : (PyObject *)PyEval_GetFrame());
    if (site == NULL)
        goto done;
    PyObject *link = parent_link(e->current_task, e->link_of, e->track_cls, e->plink_off, loop);
    if (link == NULL) {
        Py_DECREF(site);
        goto done;
    }
    if (site == Py_None) {
        e_set(e, task, xr, E_CODE, Py_NewRef(Py_None));
        e_set(e, task, xr, E_LASTI, Py_NewRef(Py_None));
    }
    else {
        e_set(e, task, xr, E_CODE, (PyObject *)PyFrame_GetCode((PyFrameObject *)site));
        if (e_set(e, task, xr, E_LASTI, lasti_of(site)) < 0) {
            Py_DECREF(site);
            Py_DECREF(link);
            goto done;
        }
    }
    Py_DECREF(site);
    tm->v[F_CREATED] = monotonic();
    tm->set |= F_BIT(F_CREATED);
    e_set(e, task, xr, E_LINK, link);  /* last: origin_of reads it first */
    rc = 0;
    int eager = start == NULL ? 0 : PyObject_IsTrue(start);
    if (eager <= 0 || loop == Py_None) {
        rc = eager;
        goto done;
    }
    if (!running) {
        /* another thread's loop, maybe: loop.is_running(), as Task.__init__ asks it */
        PyObject *r = PyObject_CallMethodNoArgs(loop, s_is_running);
        running = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
        if (running <= 0) {
            rc = running;
            goto done;
        }
    }
    PyObject *mm;
    if (LIKELY(loop == e->seen_loop && e->seen_gen == metrics_gen))
        mm = Py_NewRef(e->seen_m);  /* see loop_metrics: the lookup costs ~200 instructions */
    else if (eager_metrics_slow(e, loop, &mm) < 0) {
        rc = -1;
        goto done;
    }
    if (xr != NULL && mm != NULL)
        Py_XSETREF(xr->m, Py_NewRef(mm));  /* for its end, if no step files it */
    *m = mm;
done:
    Py_DECREF(loop);
    return rc;
}

/* Tracker.eager_step: the first step, timed around asyncio's __init__,
 * filed like any other; 1 if it finished the task, -1 on error. */
static ALWAYS_INLINE int
eager_first_step(EagerInit *e, PyObject *task, Times *tm, PyObject *m, double n0, double t0, double t1)
{
    Py_ssize_t *mo = e->m_off;
    double nested = MCORE(m)->nested;
    /* eager children of this step added their spans since n0 */
    double d = t1 - t0 - (nested - n0);
    if (d < 0.0)
        d = 0.0;
    MCORE(m)->nested = n0 + (t1 - t0);
    if (file_step(m, mo, &e->hist, task, t0, d) < 0)
        return -1;
    tm->v[F_BUSY] = tm->v[F_LONGEST] = d;
    tm->v[F_FIRST] = 0.0;
    tm->v[F_LAST] = t1;
    tm->steps = 1;
    tm->set = (tm->set & ~FIRST_NONE) | F_BIT(F_STEPS) | F_BIT(F_BUSY) | F_BIT(F_LONGEST) | F_BIT(F_FIRST) | F_BIT(F_LAST);
    PyObject *state = cget(&e->g_state, task, s_state);
    if (state == NULL)
        return -1;
    int pending = state == s_PENDING || PyUnicode_Compare(state, s_PENDING) == 0;
    Py_DECREF(state);
    return !pending;
}

/* After the first step: task_register, then the end if that step ended the
 * task (note_end, its clean case inlined). */
static ALWAYS_INLINE int
eager_after(EagerInit *e, PyObject *task, XRec *xr, PyObject *m, int ended, double t1)
{
    int want = hook_on(e->hooks, HOOK_REGISTER, s_register);
    if (want < 0)
        return -1;
    if (want) {
        PyObject *r = PyObject_CallMethodOneArg(e->hooks, s_call_register, task);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    if (!ended)
        return 0;
    int rc, clean = clean_finish(&e->g_state, &e->g_exception, task, e_get(e, task, xr, E_CANCEL));
    if (clean < 0)
        return -1;
    if (clean) {
        e_set(e, task, xr, E_ENDED, Py_NewRef(Py_True));  /* its __del__ must not record it again */
        count_done(m);
        rc = keep_clean_end(e->budget, e->hooks, e->clean_end, task, t1);
    }
    else {
        PyObject *now = PyFloat_FromDouble(t1);
        PyObject *r = now != NULL ? PyObject_CallFunctionObjArgs(e->note_end, m, task, now, NULL) : NULL;
        Py_XDECREF(now);
        Py_XDECREF(r);
        rc = r == NULL ? -1 : 0;
    }
    return rc;
}

/* The body of EagerTrackedTask.__init__ (xr NULL) and of an exact task's
 * construction (its record xr, listed): the record, asyncio's own
 * __init__ with the eager first step it runs timed, task_register, and the
 * end if that step ended the task.  Returns what asyncio's __init__ did. */
static ALWAYS_INLINE int
eager_init_body(EagerInit *e, PyObject *task, XRec *xr, PyObject *args, PyObject *kwds, PyObject *from)
{
    PyObject *m = NULL;
    if (eager_record(e, task, xr, args, kwds, from, &m) < 0) {
        hand_over_error(e->note_error);  /* never into the program */
        Py_CLEAR(m);
    }
    double n0 = m != NULL ? MCORE(m)->nested : 0.0;
    int rc, ended = 0;
    double t1 = 0.0;
    if (m == NULL)
        rc = eager_base_init(task, args, kwds);
    else {
        double t0 = monotonic();
        rc = eager_base_init(task, args, kwds);
        t1 = monotonic();
        if (rc == 0 && (ended = eager_first_step(e, task, xr != NULL ? &xr->t : times_of(task), m, n0, t0, t1)) < 0) {
            hand_over_error(e->note_error);
            ended = 0;
        }
    }
    if (rc == 0 && eager_after(e, task, xr, m, ended, t1) < 0)
        hand_over_error(e->note_error);
    Py_XDECREF(m);
    return rc;
}

/* eager_init_body twice, laid out apart: for an exact task's record and
 * for an EagerTrackedTask's slots.  Each copy holds only its own branches
 * of e_set and e_get, so that a server's usual path (exact tasks) spans
 * fewer lines. */
static NOINLINE int
eager_init_exact(EagerInit *e, PyObject *task, XRec *xr, PyObject *args, PyObject *kwds, PyObject *from)
{
    ASSUME(xr != NULL);
    return eager_init_body(e, task, xr, args, kwds, from);
}

static NOINLINE int
eager_init_slots(EagerInit *e, PyObject *task, PyObject *args, PyObject *kwds)
{
    return eager_init_body(e, task, NULL, args, kwds, NULL);
}

static int
eager_tp_init(PyObject *task, PyObject *args, PyObject *kwds)
{
    PyObject *st = PyDict_GetItemWithError(Py_TYPE(task)->tp_dict, s_eager_init);
    if (st == NULL || !Py_IS_TYPE(st, &EagerInitType)) {
        PyErr_Clear();  /* not installed on this class after all: asyncio's own */
        return eager_base_init(task, args, kwds);
    }
    EagerInit *e = (EagerInit *)Py_NewRef(st);
    int rc = eager_init_slots(e, task, args, kwds);
    Py_DECREF(e);
    return rc;
}

REFS_GC(eagerinit, EagerInit, cls, seen_m)

static PyObject *
eagerinit_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"cls", "track_cls", "skip", "first_user", "current_task", "link_of", "running_loop",
                         "metrics_cls", "note_end", "clean_end", "budget", "hooks", "note_error", "fine_limit",
                         "bounds", "name_cell", "coro_qualname", "metrics", NULL};
    PyObject *cls, *track_cls, *skip, *first_user, *current_task, *link_of, *running_loop, *metrics_cls;
    PyObject *note_end, *clean_end, *budget, *hooks, *note_error, *bounds, *coro_qualname, *metrics;
    double fine_limit;
    int name_cell;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OOOOOOOOOOOOOdOpOO!:EagerInit", kw, &cls, &track_cls, &skip,
                                     &first_user, &current_task, &link_of, &running_loop, &metrics_cls, &note_end,
                                     &clean_end, &budget, &hooks, &note_error, &fine_limit, &bounds, &name_cell,
                                     &coro_qualname, &PyDict_Type, &metrics))
        return NULL;
    if (!PyType_Check(cls) || !PyType_Check(track_cls) || !PyType_Check(metrics_cls)
        || !PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)track_cls)) {
        PyErr_SetString(PyExc_TypeError, "cls, track_cls and metrics_cls must be classes, cls a subclass of track_cls");
        return NULL;
    }
    if (!PyDict_CheckExact(skip) || !PyList_CheckExact(budget)) {
        PyErr_SetString(PyExc_TypeError, "skip must be a dict and budget a list");
        return NULL;
    }
    if (has_times(cls) < 0)
        return NULL;
    EagerInit *self = (EagerInit *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = exact_new;
    if (hist_init(&self->hist, fine_limit, bounds) < 0 || metrics_offsets(metrics_cls, self->m_off) < 0
        || member_offset(track_cls, "_ls_plink", &self->plink_off) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    for (int i = 0; i < E_N; i++)
        if (member_offset(cls, x_names[i], &self->off[i]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
    self->name_cell = name_cell;
    task_getters(cls, NULL, &self->g_state, &self->g_exception);
    /* types.CoroutineType.__dict__["__qualname__"], for exact coroutines only */
    cget_from(coro_qualname, &PyCoro_Type, &self->g_qualname);
    self->cls = Py_NewRef(cls);
    self->track_cls = Py_NewRef(track_cls);
    self->skip = Py_NewRef(skip);
    self->first_user = Py_NewRef(first_user);
    self->current_task = Py_NewRef(current_task);
    self->link_of = Py_NewRef(link_of);
    self->running_loop = Py_NewRef(running_loop);
    self->metrics_cls = Py_NewRef(metrics_cls);
    self->note_end = Py_NewRef(note_end);
    self->clean_end = Py_NewRef(clean_end);
    self->budget = Py_NewRef(budget);
    self->hooks = Py_NewRef(hooks);
    hooks_layout(hooks);
    self->note_error = Py_NewRef(note_error);
    self->metrics = Py_NewRef(metrics);
    return (PyObject *)self;
}

/* EagerInit.at(frame, /, *args, **kwargs): as calling it with args and
 * kwargs, the creation site looked for from `frame` (spawn.py passes
 * sys._getframe(1)).  Why: PyEval_GetFrame() in the constructor would give
 * the frame of spawn's create_task, whose frame object CPython would then
 * allocate, link and free on every call; sys._getframe(1) makes only the
 * caller's, which outlives the call (aiohttp's connection coroutine) or
 * which reading the site makes anyway.  A tuple and a dict, not a
 * vectorcall: the caller passes **kwargs, so the interpreter has a dict
 * already, which asyncio's constructor takes as it is (a vectorcall would
 * turn it into names and back into a dict, ~20 cache lines a task).
 * spawn.py passes the coroutine by name too (`coro=`, which asyncio's
 * Task takes), so that no tuple of the other arguments is made either. */
static PyObject *
eagerinit_at(PyObject *op, PyObject *args, PyObject *kwds)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n < 1) {
        PyErr_SetString(PyExc_TypeError, "EagerInit.at(frame, /, *args, **kwargs) takes a frame first");
        return NULL;
    }
    EagerInit *e = (EagerInit *)op;
    PyObject *from = PyTuple_GET_ITEM(args, 0);
    PyObject *targs = n == 1 ? Py_NewRef(empty_tuple) : PyTuple_GetSlice(args, 1, n);
    if (targs == NULL)
        return NULL;
    PyObject *task;
    if (op != exact_init || exact_type == NULL)
        task = PyObject_Call(e->cls, targs, kwds);
    else
        task = exact_build(e, targs, kwds, PyFrame_Check(from) ? from : NULL);
    Py_DECREF(targs);
    return task;
}

static PyMethodDef eagerinit_methods[] = {
    {"at", (PyCFunction)(void (*)(void))eagerinit_at, METH_VARARGS | METH_KEYWORDS,
     "at(frame, /, *args, **kwargs): as calling it, the creation site looked for from `frame`."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EagerInitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loopscope.agent._speedups.EagerInit",
    .tp_doc = "EagerTrackedTask.__init__ (agent/tracker.py), compiled; see eager_init_install.  "
              "Called like the class, it makes an exact asyncio.Task while exact tasks are on (exact_enable).",
    .tp_basicsize = sizeof(EagerInit),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(EagerInit, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)eagerinit_traverse,
    .tp_clear = (inquiry)eagerinit_clear,
    .tp_dealloc = gc_dealloc,
    .tp_new = eagerinit_new,
    .tp_methods = eagerinit_methods,
};

/* eager_init_install(base, init) -> bool: init.cls is built by `init` from
 * now on.  False, and nothing changed, where that cannot be done safely:
 * a class without a Python __init__ of its own, or another Task class than
 * the first one installed over. */
static PyObject *
eager_init_install(PyObject *mod, PyObject *args)
{
    PyObject *base, *init;
    if (!PyArg_ParseTuple(args, "OO!:eager_init_install", &base, &EagerInitType, &init))
        return NULL;
    PyTypeObject *cls = (PyTypeObject *)((EagerInit *)init)->cls;
    if (!PyType_Check(base) || ((PyTypeObject *)base)->tp_init == NULL
        || !PyType_IsSubtype(cls, (PyTypeObject *)base)) {
        PyErr_SetString(PyExc_TypeError, "eager_init_install: base must be a class with an __init__, init's class derived from it");
        return NULL;
    }
    initproc base_init = ((PyTypeObject *)base)->tp_init;
    if (eager_base_init != NULL && eager_base_init != base_init)
        Py_RETURN_FALSE;
    if (!(cls->tp_flags & Py_TPFLAGS_HEAPTYPE) || PyDict_GetItemWithError(cls->tp_dict, s_init) == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;
    }
    if (PyObject_SetAttr((PyObject *)cls, s_eager_init, init) < 0)
        return NULL;
    eager_base_init = base_init;
    cls->tp_init = eager_tp_init;
    Py_RETURN_TRUE;
}


/* ------------------------------------------------------------------------
 * Exact tasks: eager tasks made as exact asyncio.Task objects, their
 * records kept beside them in the task registry (3.14+).
 *
 * Why: a task that is an instance of a subclass sends CPython down its
 * generic paths wherever another task awaits it or it awaits something:
 * task_wakeup calls result() by name, the step reads
 * _asyncio_future_blocking, get_loop and add_done_callback as bound
 * methods.  Measured on aiohttp (whose connection task awaits each
 * request's eager task): ~600 instruction-cache misses per request, about
 * 2.5 % of its throughput before loopscope records anything (BENCHMARKS.md,
 * fifteenth session).  An exact Task takes asyncio's fast paths.
 *
 * What an EagerTrackedTask keeps in its slots and Times goes into an XRec
 * the registry holds beside the task's pointer: the step hook finds it in
 * the one probe it makes for an exact task (account), the constructor
 * writes it through the same code as the slots (eager_init_body).
 * asyncio's Task class gets, while exact tasks are on:
 *  - getset descriptors of the record's names (`_ls_cancel`, `_ls_steps`,
 *    ...), so that every Python reader and writer of those attributes works
 *    on an exact task as on one of loopscope's; a task without a record
 *    raises AttributeError, as an unset slot does.  Loopscope's subclasses
 *    define the same names themselves, which come first in their MRO;
 *  - a finaliser (exact_finalize) that files the end of a task no step
 *    ended (destroyed pending, or on a loop without the step hook), unlists
 *    it and frees its record, then calls asyncio's: the record never
 *    outlives the task;
 *  - a `cancel` (ExactCancel) that records who cancelled a task with a
 *    record, then calls asyncio's.
 * exact_disable puts asyncio's back and drops every record.  A subclass
 * of Task made meanwhile inherits exact_finalize, which then just calls
 * asyncio's for it.
 */

static destructor exact_base_finalize;  /* its own finaliser (kept: subclasses may inherit ours) */
static PyObject *exact_cancel_orig;     /* its own cancel, while on */

static void
xrec_free(XRec *r)
{
    for (int i = 0; i < X_N; i++)
        Py_XDECREF(r->f[i]);
    Py_XDECREF(r->m);
    Py_XDECREF(r->owner);
    xrec_drop(r);  /* after the releases, which may run code that frees or makes records */
}

/* An exact eager task built from asyncio.Task's arguments (`kwds` may be
 * NULL) by `e`, the EagerInit that is on, and its record listed beside it.
 * `from`: the frame the creation site is looked for from (borrowed), or
 * NULL for the caller's. */
static PyObject *
exact_build(EagerInit *e, PyObject *targs, PyObject *kwds, PyObject *from)
{
    PyTypeObject *tp = exact_type;
    PyObject *task = tp->tp_new(tp, targs, kwds);
    if (task == NULL)
        return NULL;
    XRec *xr = reg_on ? xrec_alloc() : NULL;
    if (xr != NULL && reg_put(task, xr) < 0) {
        xrec_drop(xr);
        xr = NULL;
    }
    int rc;
    if (xr == NULL)
        rc = eager_base_init(task, targs, kwds);  /* no memory: made, not recorded */
    else {
        xr->owner = Py_NewRef((PyObject *)e);
        xr->eager = 1;
        rc = eager_init_exact(e, task, xr, targs, kwds, from);
    }
    if (rc < 0) {
        XRec *gone = reg_remove(task);
        if (gone != NULL)
            xrec_free(gone);
        Py_CLEAR(task);
    }
    return task;
}

/* EagerInit called like the class: exact_build, from the call's arguments.
 * While exact tasks are off (or for another EagerInit than the one on),
 * the class itself. */
static PyObject *
exact_new(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    EagerInit *e = (EagerInit *)op;
    if (op != exact_init || exact_type == NULL)
        return PyObject_Vectorcall(e->cls, args, nargsf, kwnames);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *targs = PyTuple_New(nargs), *kwds = NULL, *task = NULL;
    if (targs == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(targs, i, Py_NewRef(args[i]));
    if (nkw > 0) {
        if ((kwds = PyDict_New()) == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (PyDict_SetItem(kwds, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
                goto done;
    }
    task = exact_build(e, targs, kwds, NULL);
done:
    Py_DECREF(targs);
    Py_XDECREF(kwds);
    return task;
}

/* The tp_new of the class a library's view of asyncio gets as `Task`
 * (integrations.py: aiohttp builds its tasks with asyncio.Task(...)): an
 * exact task while exact tasks are on, which type_call then leaves alone
 * (it is not an instance of the class); else one of its base, the eager
 * class, built and initialised by it. */
static PyObject *
view_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (exact_init != NULL && exact_type != NULL)
        return exact_build((EagerInit *)exact_init, args, kwds, NULL);
    return PyObject_Call((PyObject *)type->tp_base, args, kwds);
}

/* exact_view(cls) -> bool: `cls`, a subclass of the eager class with no
 * __new__ or __init__ of its own, is built by view_tp_new from now on. */
static PyObject *
exact_view(PyObject *mod, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "exact_view(cls): cls must be a class");
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)cls;
    if (!(tp->tp_flags & Py_TPFLAGS_HEAPTYPE) || tp->tp_base == NULL || tp->tp_base->tp_init != eager_tp_init
        || tp->tp_basicsize != tp->tp_base->tp_basicsize || tp->tp_dict == NULL
        || PyDict_GetItemString(tp->tp_dict, "__new__") != NULL || PyDict_GetItemString(tp->tp_dict, "__init__") != NULL)
        Py_RETURN_FALSE;
    tp->tp_new = view_tp_new;
    Py_RETURN_TRUE;
}

/* The end of an exact task that no step filed: TaskDel's record_release,
 * from its record. */
static int
exact_release(XRec *xr, PyObject *task)
{
    EagerInit *e = (EagerInit *)xr->owner;
    PyObject *m = xr->m != NULL ? Py_NewRef(xr->m) : NULL;
    if (m == NULL) {
        /* TaskDel's metrics_of: by the loop's id (uvloop's loops take no
         * attribute) */
        PyObject *loop = PyObject_GetAttr(task, s_loop);
        PyObject *key = loop != NULL ? PyLong_FromVoidPtr(loop) : NULL;
        Py_XDECREF(loop);
        if (key == NULL)
            return -1;
        m = PyDict_GetItemWithError(e->metrics, key);  /* borrowed */
        Py_DECREF(key);
        if (m == NULL && PyErr_Occurred())
            return -1;
        if (m != NULL && (PyObject *)Py_TYPE(m) != e->metrics_cls)
            m = NULL;
        Py_XINCREF(m);
    }
    int rc = -1, clean = clean_finish(&e->g_state, &e->g_exception, task, xr->f[E_CANCEL]);
    if (clean < 0)
        goto done;
    if (clean) {
        if (m != NULL)
            count_done(m);
        rc = keep_clean_end(e->budget, e->hooks, e->clean_end, task, -1.0);
    }
    else {
        PyObject *now = PyFloat_FromDouble(monotonic());
        PyObject *r = now ? PyObject_CallFunctionObjArgs(e->note_end, m != NULL ? m : Py_None, task, now, NULL) : NULL;
        Py_XDECREF(now);
        Py_XDECREF(r);
        rc = r == NULL ? -1 : 0;
    }
done:
    Py_XDECREF(m);
    return rc;
}

static void
exact_finalize(PyObject *task)
{
    XRec *xr;
    if (Py_TYPE(task) == exact_type && (xr = reg_rec(task)) != NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (xr->f[E_ENDED] != Py_True) {
            PyObject *owner = Py_NewRef(xr->owner);
            if (exact_release(xr, task) < 0)
                hand_over_error(((EagerInit *)owner)->note_error);  /* never into the program */
            Py_DECREF(owner);
            /* the Python code above may have changed the table (even
             * dropped every record: exact_disable): unlist only what is
             * still ours */
            if (reg_rec(task) == xr)
                xrec_free(reg_remove(task));
        }
        else
            xrec_free(reg_remove(task));  /* no code ran since reg_rec: still listed */
        PyErr_Restore(type, value, tb);
    }
    exact_base_finalize(task);
}

/* The record's attributes on asyncio's Task (see above): closure i < X_N is
 * a field, X_N + f the Times field f, XG_EAGER `_ls_eager`. */
enum { XG_TIMES = X_N, XG_EAGER = X_N + F_N, XG_N };

static PyObject *
exact_get(PyObject *task, void *closure)
{
    int i = (int)(intptr_t)closure;
    XRec *xr = Py_TYPE(task) == exact_type ? reg_rec(task) : NULL;
    if (xr != NULL) {
        if (i >= XG_EAGER)
            return PyBool_FromLong(xr->eager);
        if (i >= XG_TIMES)
            return times_read(&xr->t, i - XG_TIMES, task);
        if (xr->f[i] != NULL)
            return Py_NewRef(xr->f[i]);
    }
    PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'", Py_TYPE(task)->tp_name,
                 i >= XG_EAGER ? "_ls_eager" : i >= XG_TIMES ? f_names[i - XG_TIMES] : x_names[i]);
    return NULL;
}

static int
exact_set(PyObject *task, PyObject *value, void *closure)
{
    int i = (int)(intptr_t)closure;
    XRec *xr = Py_TYPE(task) == exact_type ? reg_rec(task) : NULL;
    if (xr == NULL || i >= XG_EAGER) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s' to set", Py_TYPE(task)->tp_name,
                     i >= XG_EAGER ? "_ls_eager" : i >= XG_TIMES ? f_names[i - XG_TIMES] : x_names[i]);
        return -1;
    }
    if (i >= XG_TIMES)
        return times_write(&xr->t, i - XG_TIMES, value);
    Py_XSETREF(xr->f[i], Py_XNewRef(value));
    return 0;
}

static PyGetSetDef exact_getset[XG_N];

/* ExactCancel: asyncio.Task.cancel while exact tasks are on. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *orig;        /* asyncio's cancel (a method descriptor) */
    PyObject *record;      /* tracker's exact_cancel(task, msg) */
    PyObject *note_error;
} ExactCancel;

static PyObject *s_msg;

static PyObject *
exactcancel_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ExactCancel *self = (ExactCancel *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    /* only a call asyncio's cancel(msg=None) takes is recorded: a wrong
     * one gets asyncio's TypeError and no cancel record */
    int valid = nargs >= 1 && nargs + nkw <= 2
                && (nkw == 0 || PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), s_msg) == 0);
    if (valid && Py_TYPE(args[0]) == exact_type && reg_rec(args[0]) != NULL) {
        PyObject *msg = nargs + nkw == 2 ? args[1] : Py_None;
        PyObject *r = PyObject_CallFunctionObjArgs(self->record, args[0], msg, NULL);
        if (r == NULL)
            hand_over_error(self->note_error);  /* the cancel itself goes on */
        Py_XDECREF(r);
    }
    return PyObject_Vectorcall(self->orig, args, nargsf, kwnames);
}

REFS_GC(exactcancel, ExactCancel, orig, note_error)

/* Anything else is asyncio's cancel's: __name__, __qualname__,
 * __text_signature__, __objclass__, for whoever introspects it. */
static PyObject *
exactcancel_getattro(PyObject *op, PyObject *name)
{
    PyObject *v = PyObject_GenericGetAttr(op, name);
    if (v != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return v;
    PyErr_Clear();
    return PyObject_GetAttr(((ExactCancel *)op)->orig, name);
}

static PyObject *
exactcancel_get_doc(PyObject *op, void *closure)
{
    return PyObject_GetAttrString(((ExactCancel *)op)->orig, "__doc__");
}

static PyGetSetDef exactcancel_getset[] = {
    {"__doc__", exactcancel_get_doc, NULL, NULL, NULL},
    {NULL},
};

static PyTypeObject ExactCancelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loopscope.agent._speedups.ExactCancel",
    .tp_basicsize = sizeof(ExactCancel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(ExactCancel, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = method_descr_get,
    .tp_getattro = exactcancel_getattro,
    .tp_getset = exactcancel_getset,
    .tp_traverse = (traverseproc)exactcancel_traverse,
    .tp_clear = (inquiry)exactcancel_clear,
    .tp_dealloc = gc_dealloc,
};

/* 1 if none of the names exact_enable adds is in asyncio's Task's dict. */
static int
exact_names_free(PyObject *dict)
{
    for (int i = 0; i < XG_N; i++) {
        PyObject *name = PyUnicode_FromString(exact_getset[i].name);
        int has = name == NULL ? -1 : PyDict_Contains(dict, name);
        Py_XDECREF(name);
        if (has != 0)
            return has < 0 ? -1 : 0;
    }
    return 1;
}

/* exact_enable(base, init, record_cancel, note_error) -> bool: `init`
 * (an EagerInit), called, makes exact tasks of `base` (asyncio.Task) from
 * now on.  False, and nothing changed, where that cannot be done safely:
 * the registry off, `base` not the class EagerInit's install read its
 * __init__ from, a finaliser or a `cancel` already replaced, a name taken. */
static PyObject *
exact_enable(PyObject *mod, PyObject *args)
{
    PyObject *base, *init, *record, *note_error;
    if (!PyArg_ParseTuple(args, "O!O!OO:exact_enable", &PyType_Type, &base, &EagerInitType, &init, &record, &note_error))
        return NULL;
    PyTypeObject *tp = (PyTypeObject *)base;
#ifdef Py_GIL_DISABLED
    Py_RETURN_FALSE;  /* the registry is off there */
#endif
    if (exact_type != NULL || !reg_on || tp->tp_init != eager_base_init || tp->tp_finalize == NULL
        || tp->tp_finalize != reg_base_finalize || tp->tp_dict == NULL)
        Py_RETURN_FALSE;
    PyObject *dict = tp->tp_dict;
    PyObject *orig = PyDict_GetItemString(dict, "cancel");  /* borrowed */
    if (orig == NULL || !Py_IS_TYPE(orig, &PyMethodDescr_Type))
        Py_RETURN_FALSE;
    for (int i = 0; i < XG_N; i++) {
        exact_getset[i].name = i >= XG_EAGER ? "_ls_eager" : i >= XG_TIMES ? f_names[i - XG_TIMES] : x_names[i];
        exact_getset[i].get = exact_get;
        exact_getset[i].set = i >= XG_EAGER ? NULL : exact_set;
        exact_getset[i].doc = NULL;
        exact_getset[i].closure = (void *)(intptr_t)i;
    }
    int free_ = exact_names_free(dict);
    if (free_ <= 0) {
        if (free_ < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    ExactCancel *c = PyObject_GC_New(ExactCancel, &ExactCancelType);
    if (c == NULL)
        return NULL;
    c->vectorcall = exactcancel_vectorcall;
    c->orig = Py_NewRef(orig);
    c->record = Py_NewRef(record);
    c->note_error = Py_NewRef(note_error);
    PyObject_GC_Track((PyObject *)c);
    PyObject *descrs[XG_N];
    int made = 0;
    for (; made < XG_N; made++)
        if ((descrs[made] = PyDescr_NewGetSet(tp, &exact_getset[made])) == NULL)
            break;
    int ok = made == XG_N;
    for (int i = 0; ok && i < XG_N; i++)
        ok = PyDict_SetItemString(dict, exact_getset[i].name, descrs[i]) == 0;
    if (ok)
        ok = PyDict_SetItemString(dict, "cancel", (PyObject *)c) == 0;
    for (int i = 0; i < made; i++)
        Py_DECREF(descrs[i]);
    if (!ok) {
        for (int i = 0; i < XG_N; i++)
            if (PyDict_DelItemString(dict, exact_getset[i].name) < 0)
                PyErr_Clear();
        (void)PyDict_SetItemString(dict, "cancel", orig);
        PyType_Modified(tp);
        Py_DECREF(c);
        return NULL;
    }
    exact_cancel_orig = Py_NewRef(orig);
    Py_DECREF(c);  /* the dict holds it */
    exact_base_finalize = tp->tp_finalize;
    tp->tp_finalize = exact_finalize;
    PyType_Modified(tp);
    exact_init = Py_NewRef(init);
    exact_type = tp;
    Py_RETURN_TRUE;
}

/* exact_disable() -> int: asyncio's Task as it was; every record dropped
 * (its task no longer listed).  The number of records dropped. */
static PyObject *
exact_disable(PyObject *mod, PyObject *unused)
{
    PyTypeObject *tp = exact_type;
    if (tp == NULL)
        return PyLong_FromLong(0);
    exact_type = NULL;  /* from here no record is made, read or filed */
    tp->tp_finalize = exact_base_finalize;
    PyObject *dict = tp->tp_dict;
    for (int i = 0; i < XG_N; i++)
        if (PyDict_DelItemString(dict, exact_getset[i].name) < 0)
            PyErr_Clear();
    if (PyDict_SetItemString(dict, "cancel", exact_cancel_orig) < 0)
        PyErr_Clear();
    Py_CLEAR(exact_cancel_orig);
    PyType_Modified(tp);
    Py_CLEAR(exact_init);
    /* the records, taken out of the table first, freed after (freeing may
     * run any code, which may list or unlist tasks) */
    Py_ssize_t n = 0, k = 0;
    size_t size = reg_slots == NULL ? 0 : (size_t)1 << reg_bits;
    for (size_t i = 0; i < size; i++)
        n += reg_slots[i].task != NULL && reg_slots[i].rec != NULL;
    PyObject **tasks = n > 0 ? PyMem_Malloc((size_t)n * sizeof(PyObject *)) : NULL;
    if (n > 0 && tasks == NULL)
        return PyErr_NoMemory();
    for (size_t i = 0; i < size && k < n; i++)
        if (reg_slots[i].task != NULL && reg_slots[i].rec != NULL)
            tasks[k++] = reg_slots[i].task;
    XRec **recs = (XRec **)tasks;  /* the same array, one for one */
    for (Py_ssize_t i = 0; i < k; i++)
        recs[i] = reg_remove(tasks[i]);
    for (Py_ssize_t i = 0; i < k; i++)
        if (recs[i] != NULL)
            xrec_free(recs[i]);
    PyMem_Free(tasks);
    while (xrec_nspare > 0)  /* nothing of loopscope's left behind */
        PyMem_Free(xrec_spare[--xrec_nspare]);
    return PyLong_FromSsize_t(k);
}

/* exact_has(task) -> bool: an exact task with a record (one of ours). */
static PyObject *
exact_has(PyObject *mod, PyObject *task)
{
    return PyBool_FromLong(Py_TYPE(task) == exact_type && reg_rec(task) != NULL);
}

/* ------------------------------------------------------------------------
 * PrimInit: the `__init__` primitives.py puts on asyncio's Lock, Semaphore,
 * Event, Condition, Barrier and Queue (PrimitiveTracker._wrap_init),
 * compiled: asyncio's own __init__, then the object recorded at its
 * creator's line.
 *
 * Why: servers make primitives per request (uvicorn an asyncio.Event for
 * each), and the Python wrapper costs a frame of its own, the arguments
 * packed and unpacked again, and a dozen lookups, for every one.  Here the
 * usual case, a creator already known to be user code
 * (primitives._user_callers), is a few C calls; anything else goes to the
 * Python `slow(obj, frame)`, which does what the Python wrapper does after
 * its own fast path.  The record is the one the Python wrapper stores:
 * registry[weakref(obj, pop)] = (kind, code, lasti, monotonic()).
 */
#define PRIM_LASTI_N 4  /* creation sites' offsets a PrimInit keeps as ints */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *orig;         /* asyncio's __init__ */
    PyObject *users;        /* primitives._user_callers: id(code) -> code */
    PyObject *kinds;        /* primitives._kinds: class -> kind or None */
    PyObject *registry;     /* the WeakRegistry's dict */
    PyObject *pop;          /* its pop: the weak references' callback */
    PyObject *slow;         /* slow(obj, frame): the rest of the Python wrapper */
    PyObject *note_error;
    /* The last creation sites' offsets as int objects, by value: a site
     * makes its objects at one offset, and CPython caches no int above 256,
     * so each record would otherwise make and free one. */
    PyObject *lasti_obj[PRIM_LASTI_N];
    int lasti_v[PRIM_LASTI_N];
} PrimInit;

/* `lasti` as an int (a new reference), shared while it stays the same. */
static PyObject *
prim_lasti(PrimInit *self, int lasti)
{
    size_t i = ((unsigned)lasti >> 1) & (PRIM_LASTI_N - 1);
    if (self->lasti_obj[i] != NULL && self->lasti_v[i] == lasti)
        return Py_NewRef(self->lasti_obj[i]);
    PyObject *v = PyLong_FromLong(lasti);
    if (v != NULL) {
        Py_XSETREF(self->lasti_obj[i], Py_NewRef(v));
        self->lasti_v[i] = lasti;
    }
    return v;
}

static PyObject *
priminit_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PrimInit *self = (PrimInit *)op;
    PyObject *r = PyObject_Vectorcall(self->orig, args, nargsf, kwnames);
    if (r == NULL)
        return NULL;  /* asyncio's own error, as asyncio raised it */
    Py_DECREF(r);
    if (PyVectorcall_NARGS(nargsf) < 1)
        Py_RETURN_NONE;  /* orig accepted no self?  then there is nothing to record */
    PyObject *obj = args[0];
    /* the caller: no frame of ours is between (a C call pushes none) */
    PyFrameObject *frame = PyEval_GetFrame();
    if (frame == NULL)
        Py_RETURN_NONE;
    Py_INCREF(frame);
    PyCodeObject *code = PyFrame_GetCode(frame);
    PyObject *key = PyLong_FromVoidPtr(code), *known = NULL, *kind = NULL, *rc = NULL;
    int done = 0;
    if (key == NULL)
        goto error;
    known = PyDict_GetItemWithError(self->users, key);  /* borrowed */
    Py_DECREF(key);
    if (known == NULL && PyErr_Occurred())
        goto error;
    if (known == (PyObject *)code) {
        kind = PyDict_GetItemWithError(self->kinds, (PyObject *)Py_TYPE(obj));  /* borrowed */
        if (kind == NULL && PyErr_Occurred())
            goto error;
        if (kind != NULL) {
            /* (kind, code, lasti, monotonic()) built in place: PyTuple_Pack
             * is code of its own that nothing else on a request runs
             * (counted on uvicorn: 6 instruction-cache misses more) */
            PyObject *record = PyTuple_New(4);
            if (record == NULL)
                goto error;
            PyTuple_SET_ITEM(record, 0, kind != Py_None ? Py_NewRef(kind) : PyType_GetName(Py_TYPE(obj)));
            PyTuple_SET_ITEM(record, 1, Py_NewRef(code));
            PyTuple_SET_ITEM(record, 2, prim_lasti(self, PyFrame_GetLasti(frame)));
            PyTuple_SET_ITEM(record, 3, PyFloat_FromDouble(monotonic()));
            if (PyTuple_GET_ITEM(record, 0) == NULL || PyTuple_GET_ITEM(record, 2) == NULL
                || PyTuple_GET_ITEM(record, 3) == NULL) {
                Py_DECREF(record);
                goto error;
            }
            PyObject *ref = PyWeakref_NewRef(obj, self->pop);
            int bad = ref == NULL || PyDict_SetItem(self->registry, ref, record) < 0;
            Py_XDECREF(ref);
            Py_DECREF(record);
            if (bad)
                goto error;
            done = 1;
        }
    }
    if (!done) {
        rc = PyObject_CallFunctionObjArgs(self->slow, obj, (PyObject *)frame, NULL);
        if (rc == NULL)
            goto error;
        Py_DECREF(rc);
    }
    Py_DECREF(code);
    Py_DECREF(frame);
    Py_RETURN_NONE;
error:
    hand_over_error(self->note_error);  /* never into the program */
    Py_DECREF(code);
    Py_DECREF(frame);
    Py_RETURN_NONE;
}

static PyObject *
priminit_wrapped(PyObject *op, void *closure)
{
    return Py_NewRef(((PrimInit *)op)->orig);
}

/* __name__, __qualname__, __doc__ and __module__: the original's */
static PyObject *
priminit_orig_attr(PyObject *op, void *closure)
{
    return PyObject_GetAttrString(((PrimInit *)op)->orig, (const char *)closure);
}

static PyGetSetDef priminit_getset[] = {
    {"__wrapped__", priminit_wrapped, NULL, "asyncio's own __init__.", NULL},
    {"__name__", priminit_orig_attr, NULL, NULL, "__name__"},
    {"__qualname__", priminit_orig_attr, NULL, NULL, "__qualname__"},
    {"__doc__", priminit_orig_attr, NULL, NULL, "__doc__"},
    {"__module__", priminit_orig_attr, NULL, NULL, "__module__"},
    {NULL},
};

REFS_GC(priminit, PrimInit, orig, lasti_obj[PRIM_LASTI_N - 1])  /* the lasti ints are last */

static PyObject *
priminit_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"orig", "users", "kinds", "registry", "pop", "slow", "note_error", NULL};
    PyObject *orig, *users, *kinds, *registry, *pop, *slow, *note_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$O!O!O!O!OOO:PrimInit", kw, &PyFunction_Type, &orig, &PyDict_Type,
                                     &users, &PyDict_Type, &kinds, &PyDict_Type, &registry, &pop, &slow, &note_error))
        return NULL;
    PrimInit *self = (PrimInit *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = priminit_vectorcall;
    self->orig = Py_NewRef(orig);
    self->users = Py_NewRef(users);
    self->kinds = Py_NewRef(kinds);
    self->registry = Py_NewRef(registry);
    self->pop = Py_NewRef(pop);
    self->slow = Py_NewRef(slow);
    self->note_error = Py_NewRef(note_error);
    return (PyObject *)self;
}

static PyObject *
priminit_repr(PyObject *op)
{
    return PyUnicode_FromFormat("<loopscope-recorded %R>", ((PrimInit *)op)->orig);
}

static PyTypeObject PrimInitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loopscope.agent._speedups.PrimInit",
    .tp_doc = "A primitive's __init__ with loopscope's creation record (agent/primitives.py's _wrap_init), compiled.",
    .tp_basicsize = sizeof(PrimInit),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(PrimInit, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = method_descr_get,
    .tp_getset = priminit_getset,
    .tp_repr = priminit_repr,
    .tp_traverse = (traverseproc)priminit_traverse,
    .tp_clear = (inquiry)priminit_clear,
    .tp_dealloc = gc_dealloc,
    .tp_new = priminit_new,
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "loopscope.agent._speedups",
    "The step hook compiled; see agent/steps.py for the same in Python.", -1, module_methods,
};

static int
intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern(&s_loop, "_loop") || intern(&s_callback, "_callback") || intern(&s_args, "_args")
        || intern(&s_context, "_context") || intern(&s_metrics, "_loopscope_metrics") || intern(&s_state, "_state")
        || intern(&s_exception, "_exception") || intern(&s_unregister, "unregister")
        || intern(&s_long_step, "long_step") || intern(&s_PENDING, "PENDING") || intern(&s_FINISHED, "FINISHED")
        || intern(&s_register, "register") || intern(&s_call_register, "call_register")
        || intern(&s_ls_m, "_ls_m") || intern(&s_self, "__self__") || intern(&s_eager_init, "_ls_eager_init")
        || intern(&s_coro, "coro") || intern(&s_loop_kw, "loop") || intern(&s_eager_start, "eager_start")
        || intern(&s_qualname, "__qualname__") || intern(&s_is_running, "is_running") || intern(&s_init, "__init__")
        || intern(&s_msg, "msg"))
        return NULL;
    zero = PyLong_FromLong(0);
    fzero = PyFloat_FromDouble(0.0);
    if ((empty_tuple = PyTuple_New(0)) == NULL)
        return NULL;
    loop_gone_cb = PyCFunction_New(&loop_gone_def, NULL);
    if (loop_gone_cb == NULL)
        return NULL;
    if (zero == NULL || fzero == NULL)
        return NULL;
    if (PyType_Ready(&ExactCancelType) < 0)
        return NULL;
    /* each under the last part of its tp_name */
    PyTypeObject *types[] = {&StepRunType, &TrackType, &TaskDelType, &EagerInitType, &CountsType, &MetricsCoreType, &PrimInitType};
    PyObject *mod = PyModule_Create(&speedups_module);
    if (mod == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (PyModule_AddType(mod, types[i]) < 0) {  /* readies the type too */
            Py_DECREF(mod);
            return NULL;
        }
    return mod;
}
