/* view-statement's installment rows, written in C: app/servicing/rows.py's `python_rows` and
 * `python_paid`, exactly (tests/servicing/test_rows.py holds each pair together on random input).
 *
 * Why C: a 360-installment statement spent ~330 us of the API's CPU stepping and formatting its rows in
 * Python, 60 % of the request, and each paid installment ~1 us more (bench/PROFILING.md, "Sixth look");
 * here the whole schedule takes a few microseconds. The arithmetic is app/credit/schedule.py's `steps`, on
 * 64-bit cents with a 128-bit product; anything that does not fit raises OverflowError and the caller
 * uses the Python rows instead.
 *
 * rows(balance, numerator, denominator, emi, first, last, tenure, due_dates, split, before, after)
 *     -> (text, count)
 * Installments first..min(last, tenure) until the balance is repaid, each written as
 *     {"number":N,"due_date":"<due_dates[N - 1]>","amount":A,"principal":P,"interest":I,"balance_after":B
 * followed by `before` when N < split, else `after`, the rows joined by commas. Figures in cents are
 * written with two decimals. `due_dates` and the two suffixes are ASCII str; `count` is how many rows
 * were written.
 *
 * paid(payments, first, outstanding, due_dates, on_time, late) -> (installments, payments)
 * The paid installments' rows and the payments' entries, each list's items joined by commas (see paid()).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

__extension__ typedef __int128 wide_t; /* gcc and clang: the product of two 61-bit numbers, exactly */

typedef struct {
    char *data;
    Py_ssize_t length;
    Py_ssize_t capacity;
} Buffer;

static int reserve(Buffer *buffer, Py_ssize_t more) {
    if (buffer->length + more <= buffer->capacity) {
        return 0;
    }
    Py_ssize_t capacity = buffer->capacity * 2;
    if (capacity < buffer->length + more) {
        capacity = buffer->length + more;
    }
    char *data = PyMem_Realloc(buffer->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

/* Room is reserved by the caller. */
static void put(Buffer *buffer, const char *text, Py_ssize_t length) {
    memcpy(buffer->data + buffer->length, text, (size_t)length);
    buffer->length += length;
}

#define PUT(buffer, literal) put((buffer), (literal), (Py_ssize_t)sizeof(literal) - 1)

/* "00" to "99": two digits per division. */
static const char PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* A due date: ISO text, 10 bytes but for years past 9999 (a fixed-size copy is a few instructions, a
 * variable one a call). Room is reserved by the caller. */
static void put_due(Buffer *buffer, const char *due, Py_ssize_t length) {
    if (length == 10) {
        memcpy(buffer->data + buffer->length, due, 10);
        buffer->length += 10;
    } else {
        put(buffer, due, length);
    }
}

/* A non-negative whole number's digits, written backwards from `end`; returns where they start. */
static char *digits_before(char *end, int64_t number) {
    while (number >= 100) {
        end -= 2;
        memcpy(end, PAIRS + 2 * (number % 100), 2);
        number /= 100;
    }
    if (number >= 10) {
        end -= 2;
        memcpy(end, PAIRS + 2 * number, 2);
    } else {
        *--end = (char)('0' + number);
    }
    return end;
}

/* How many decimal digits a non-negative whole number has. */
static int digit_count(int64_t number) {
    int count = 1;
    while (number >= 100) {
        number /= 100;
        count += 2;
    }
    return count + (number >= 10);
}

/* A non-negative whole number, its digits written in place (no copy through a scratch buffer: a row
 * has five numbers). Room is reserved by the caller (at most 20 bytes). */
static void put_number(Buffer *buffer, int64_t number) {
    int count = digit_count(number);
    digits_before(buffer->data + buffer->length + count, number);
    buffer->length += count;
}

/* A non-negative number of cents as "units.cc". Room is reserved by the caller (at most 24 bytes). */
static void put_figure(Buffer *buffer, int64_t cents) {
    put_number(buffer, cents / 100);
    char *end = buffer->data + buffer->length;
    end[0] = '.';
    memcpy(end + 1, PAIRS + 2 * (cents % 100), 2);
    buffer->length += 3;
}

static const char *ascii(PyObject *text, Py_ssize_t *length, const char *what) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_COMPACT_ASCII(text)) {
        PyErr_Format(PyExc_TypeError, "%s must be an ASCII str", what);
        return NULL;
    }
    *length = PyUnicode_GET_LENGTH(text);
    return (const char *)PyUnicode_DATA(text);
}

static int int64_argument(PyObject *value, int64_t *out, const char *name) {
    long long number = PyLong_AsLongLong(value);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (number < 0 || number > INT64_MAX / 4) {
        PyErr_Format(PyExc_OverflowError, "%s is out of the accelerated range", name);
        return -1;
    }
    *out = (int64_t)number;
    return 0;
}


/* The buffer as an ASCII str; frees the buffer. */
static PyObject *text_of(Buffer *buffer) {
    PyObject *text = PyUnicode_New(buffer->length, 127);
    if (text != NULL && buffer->length) {
        memcpy(PyUnicode_1BYTE_DATA(text), buffer->data, (size_t)buffer->length);
    }
    PyMem_Free(buffer->data);
    buffer->data = NULL;
    return text;
}

static PyObject *rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "rows() takes 11 arguments");
        return NULL;
    }
    int64_t balance, numerator, denominator, emi, first, last, tenure, split;
    if (int64_argument(args[0], &balance, "balance") || int64_argument(args[1], &numerator, "numerator")
        || int64_argument(args[2], &denominator, "denominator") || int64_argument(args[3], &emi, "emi")
        || int64_argument(args[4], &first, "first") || int64_argument(args[5], &last, "last")
        || int64_argument(args[6], &tenure, "tenure") || int64_argument(args[8], &split, "split")) {
        return NULL;
    }
    if (denominator == 0) {
        PyErr_SetString(PyExc_ZeroDivisionError, "denominator is 0");
        return NULL;
    }
    PyObject *due_dates = args[7];
    if (!PyTuple_Check(due_dates)) {
        PyErr_SetString(PyExc_TypeError, "due_dates must be a tuple");
        return NULL;
    }
    Py_ssize_t before_length, after_length;
    const char *before = ascii(args[9], &before_length, "before");
    const char *after = before ? ascii(args[10], &after_length, "after") : NULL;
    if (after == NULL) {
        return NULL;
    }
    int64_t stop = last < tenure ? last : tenure;
    Buffer buffer = {NULL, 0, 0};
    if (stop >= first && reserve(&buffer, (Py_ssize_t)(stop - first + 1) * 200) < 0) {
        return NULL;
    }
    const wide_t twice = (wide_t)2 * denominator;
    /* 2 x balance x numerator + denominator below 2^63: 64-bit division, several times faster than 128 */
    const int narrow = numerator == 0 || balance <= (INT64_MAX - denominator) / 2 / numerator;
    Py_ssize_t count = 0;
    for (int64_t number = first; number <= stop && balance > 0; number++) {
        if (number < 1 || number > PyTuple_GET_SIZE(due_dates)) {
            PyErr_SetString(PyExc_IndexError, "no due date for this installment");
            goto fail;
        }
        int64_t interest;
        if (narrow) { /* the balance only falls, so the product fits in 64 bits all the way */
            interest = (2 * balance * numerator + denominator) / (2 * denominator);
        } else {
            wide_t wide = ((wide_t)2 * balance * numerator + denominator) / twice; /* half-up, exactly */
            if (wide > INT64_MAX / 4) {
                PyErr_SetString(PyExc_OverflowError, "interest is out of the accelerated range");
                goto fail;
            }
            interest = (int64_t)wide;
        }
        int64_t principal = emi > interest ? emi - interest : 0;
        if (number == tenure || principal >= balance) {
            principal = balance;
        }
        balance -= principal;
        Py_ssize_t due_length;
        const char *due = ascii(PyTuple_GET_ITEM(due_dates, number - 1), &due_length, "a due date");
        if (due == NULL) {
            goto fail;
        }
        const char *suffix = number < split ? before : after;
        Py_ssize_t suffix_length = number < split ? before_length : after_length;
        /* every constant part is shorter than 24 bytes, every figure too */
        if (reserve(&buffer, 1 + due_length + 11 * 24 + suffix_length) < 0) {
            goto fail;
        }
        if (count) {
            PUT(&buffer, ",");
        }
        PUT(&buffer, "{\"number\":");
        put_number(&buffer, number);
        PUT(&buffer, ",\"due_date\":\"");
        put_due(&buffer, due, due_length);
        PUT(&buffer, "\",\"amount\":");
        put_figure(&buffer, interest + principal);
        PUT(&buffer, ",\"principal\":");
        put_figure(&buffer, principal);
        PUT(&buffer, ",\"interest\":");
        put_figure(&buffer, interest);
        PUT(&buffer, ",\"balance_after\":");
        put_figure(&buffer, balance);
        put(&buffer, suffix, suffix_length);
        count++;
    }
    PyObject *text = text_of(&buffer);
    if (text == NULL) {
        return NULL;
    }
    return Py_BuildValue("(Nn)", text, count);
fail:
    PyMem_Free(buffer.data);
    return NULL;
}

/* Big-endian (network order) whole numbers, as PostgreSQL's int4send and int8send write them. */
static int64_t load64(const unsigned char *bytes) {
    uint64_t value = 0;
    for (int i = 0; i < 8; i++) {
        value = value << 8 | bytes[i];
    }
    return (int64_t)value;
}

static int64_t load32(const unsigned char *bytes) {
    uint32_t value = (uint32_t)bytes[0] << 24 | (uint32_t)bytes[1] << 16 | (uint32_t)bytes[2] << 8 | bytes[3];
    return (int32_t)value;
}

/* A payment as the statement's query packs it (app/servicing/rows.py's PAYMENT): installment_number
 * (int4), payment_id (int8), paid_on's ordinal (int4), interest and principal in cents (int8 each),
 * on_time (one byte, 0 or 1). */
#define PAYMENT_SIZE 33

typedef struct {
    int64_t number, payment_id, ordinal, interest, principal, on_time;
} Payment;

/* -1 (ValueError) for what the payments table cannot hold: a negative figure, an on_time not 0 or 1. */
static int unpack(const unsigned char *bytes, Payment *payment) {
    payment->number = load32(bytes);
    payment->payment_id = load64(bytes + 4);
    payment->ordinal = load32(bytes + 12);
    payment->interest = load64(bytes + 16);
    payment->principal = load64(bytes + 24);
    payment->on_time = bytes[32];
    if (payment->payment_id < 0 || payment->interest < 0 || payment->principal < 0 || payment->on_time > 1) {
        PyErr_SetString(PyExc_ValueError, "a payment's figures are negative or its on_time not 0 or 1");
        return -1;
    }
    if (payment->interest > INT64_MAX / 4 || payment->principal > INT64_MAX / 4) {
        PyErr_SetString(PyExc_OverflowError, "a payment's figure is out of the accelerated range");
        return -1;
    }
    return 0;
}

/* The date `ordinal` (date.toordinal(): 0001-01-01 is 1) as YYYY-MM-DD, as date.isoformat() writes it;
 * -1 (ValueError) outside the years 1-9999, which date refuses too. Days to a civil date: H. Hinnant's
 * days_from_civil inverse, counted from 0000-03-01. Room is reserved by the caller (10 bytes). */
static int put_ordinal(Buffer *buffer, int64_t ordinal) {
    if (ordinal < 1 || ordinal > 3652059) { /* 9999-12-31 */
        PyErr_SetString(PyExc_ValueError, "paid_on is out of date's range");
        return -1;
    }
    int64_t days = ordinal + 305;             /* days since 0000-03-01 */
    int64_t era = days / 146097;              /* 400-year cycles; never negative here */
    int64_t of_era = days - era * 146097;     /* [0, 146096] */
    int64_t year_of_era = (of_era - of_era / 1460 + of_era / 36524 - of_era / 146096) / 365;
    int64_t day_of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    int64_t shifted_month = (5 * day_of_year + 2) / 153; /* March is 0 */
    int day = (int)(day_of_year - (153 * shifted_month + 2) / 5 + 1);
    int month = (int)(shifted_month < 10 ? shifted_month + 3 : shifted_month - 9);
    int year = (int)(year_of_era + era * 400 + (month <= 2));
    char text[10];
    memcpy(text, PAIRS + 2 * (year / 100), 2);
    memcpy(text + 2, PAIRS + 2 * (year % 100), 2);
    text[4] = '-';
    memcpy(text + 5, PAIRS + 2 * month, 2);
    text[7] = '-';
    memcpy(text + 8, PAIRS + 2 * day, 2);
    put(buffer, text, 10);
    return 0;
}

/* paid(payments, first, outstanding, due_dates, on_time, late) -> (installments, payments):
 * app/servicing/rows.py's `python_paid`. `payments` is bytes, the payments packed as above one after the
 * other, in any order: they must be installments first..first + count - 1, once each, and are written in
 * that order. `outstanding` is what is owed after the last (cents): the balance after each one is that
 * plus the principal of those after it. */
static PyObject *paid(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "paid() takes 6 arguments");
        return NULL;
    }
    PyObject *packed = args[0], *due_dates = args[3];
    if (!PyBytes_Check(packed) || !PyTuple_Check(due_dates)) {
        PyErr_SetString(PyExc_TypeError, "paid() takes the payments as bytes and the due dates as a tuple");
        return NULL;
    }
    if (PyBytes_GET_SIZE(packed) % PAYMENT_SIZE) {
        PyErr_SetString(PyExc_ValueError, "the payments are not whole packed payments");
        return NULL;
    }
    int64_t first, outstanding;
    if (int64_argument(args[1], &first, "first") || int64_argument(args[2], &outstanding, "outstanding")) {
        return NULL;
    }
    Py_ssize_t on_time_length, late_length;
    const char *on_time = ascii(args[4], &on_time_length, "on_time");
    const char *late = on_time ? ascii(args[5], &late_length, "late") : NULL;
    if (late == NULL) {
        return NULL;
    }
    const unsigned char *bytes = (const unsigned char *)PyBytes_AS_STRING(packed);
    Py_ssize_t count = PyBytes_GET_SIZE(packed) / PAYMENT_SIZE;
    Buffer installments = {NULL, 0, 0}, payments = {NULL, 0, 0};
    /* placed[k]: the payment of installment first + k. The query does not sort them: placing each by its
     * number costs less than PostgreSQL's sort, and checks that each installment was paid once. */
    Payment *placed = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(Payment));
    if (placed == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        placed[k].number = 0;
    }
    int64_t balance = outstanding;
    for (Py_ssize_t i = 0; i < count; i++) {
        Payment payment;
        if (unpack(bytes + i * PAYMENT_SIZE, &payment) < 0) {
            goto fail;
        }
        if (payment.number < 1 || payment.number < first || payment.number - first >= count
            || placed[payment.number - first].number) {
            PyErr_SetString(PyExc_ValueError, "the payments are not installments first.. once each");
            goto fail;
        }
        placed[payment.number - first] = payment;
        balance += payment.principal; /* each below 2^61, so the sum is checked before it can overflow */
        if (balance > INT64_MAX / 4) {
            PyErr_SetString(PyExc_OverflowError, "a balance is out of the accelerated range");
            goto fail;
        }
    }
    if (count && (reserve(&installments, count * 220) < 0 || reserve(&payments, count * 200) < 0)) {
        goto fail;
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        const Payment *payment = &placed[k];
        int64_t number = payment->number;
        int64_t amount = payment->interest + payment->principal; /* each below 2^61: no overflow */
        balance -= payment->principal;
        if (number > PyTuple_GET_SIZE(due_dates)) {
            PyErr_SetString(PyExc_IndexError, "no due date for this installment");
            goto fail;
        }
        Py_ssize_t due_length;
        const char *due = ascii(PyTuple_GET_ITEM(due_dates, number - 1), &due_length, "a due date");
        if (due == NULL) {
            goto fail;
        }
        /* The figures and the date appear in both lists: written once, copied twice. */
        char figures[3][24], date[10];
        Buffer amount_text = {figures[0], 0, 24}, principal_text = {figures[1], 0, 24},
               interest_text = {figures[2], 0, 24}, date_text = {date, 0, 10};
        put_figure(&amount_text, amount);
        put_figure(&principal_text, payment->principal);
        put_figure(&interest_text, payment->interest);
        if (put_ordinal(&date_text, payment->ordinal) < 0) {
            goto fail;
        }
        /* every constant part is shorter than 24 bytes, every figure and date too */
        if (reserve(&installments, 1 + due_length + 20 * 24 + on_time_length + late_length) < 0
            || reserve(&payments, 1 + 20 * 24) < 0) {
            goto fail;
        }
        if (k) {
            PUT(&installments, ",");
            PUT(&payments, ",");
        }
        PUT(&installments, "{\"number\":");
        put_number(&installments, number);
        PUT(&installments, ",\"due_date\":\"");
        put_due(&installments, due, due_length);
        PUT(&installments, "\",\"amount\":");
        put(&installments, amount_text.data, amount_text.length);
        PUT(&installments, ",\"principal\":");
        put(&installments, principal_text.data, principal_text.length);
        PUT(&installments, ",\"interest\":");
        put(&installments, interest_text.data, interest_text.length);
        PUT(&installments, ",\"balance_after\":");
        put_figure(&installments, balance);
        PUT(&installments, ",\"status\":\"");
        if (payment->on_time) {
            put(&installments, on_time, on_time_length);
        } else {
            put(&installments, late, late_length);
        }
        PUT(&installments, "\",\"paid_on\":\"");
        put(&installments, date, 10);
        PUT(&installments, "\"}");

        PUT(&payments, "{\"payment_id\":");
        put_number(&payments, payment->payment_id);
        PUT(&payments, ",\"paid_on\":\"");
        put(&payments, date, 10);
        PUT(&payments, "\",\"amount\":");
        put(&payments, amount_text.data, amount_text.length);
        PUT(&payments, ",\"interest\":");
        put(&payments, interest_text.data, interest_text.length);
        PUT(&payments, ",\"principal\":");
        put(&payments, principal_text.data, principal_text.length);
        PUT(&payments, ",\"installment_number\":");
        put_number(&payments, number);
        if (payment->on_time) {
            PUT(&payments, ",\"on_time\":true}");
        } else {
            PUT(&payments, ",\"on_time\":false}");
        }
    }
    PyMem_Free(placed);
    PyObject *written = text_of(&installments);
    PyObject *entries = written ? text_of(&payments) : NULL;
    if (entries == NULL) {
        Py_XDECREF(written);
        PyMem_Free(payments.data);
        return NULL;
    }
    return Py_BuildValue("(NN)", written, entries);
fail:
    PyMem_Free(placed);
    PyMem_Free(installments.data);
    PyMem_Free(payments.data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(balance, numerator, denominator, emi, first, last, tenure, due_dates, split, before, after)"
     " -> (text, count): a statement's installment rows (app/servicing/rows.py)."},
    {"paid", (PyCFunction)(void (*)(void))paid, METH_FASTCALL,
     "paid(payments, first, outstanding, due_dates, on_time, late) -> (installments, payments): a"
     " statement's paid rows"
     " (app/servicing/rows.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_rows",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__rows(void) {
    return PyModule_Create(&module);
}
