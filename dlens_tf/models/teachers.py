"""TeacherEnsemble: N conditional discriminators of one architecture as one vectorised computation.

How 4000 paper-size MNIST teachers (2.2e9 parameters) fit in this machine's memory and run fast:

* Stacked weights in shards. Every parameter is a stacked `[n, ...]` tensor. The N teachers are
  split into shards of `chunk_size` teachers, each shard its own set of variables, and a step
  streams the shards one after another through ONE compiled function (traced once per shard
  size), called, never inlined, once per shard. Peak working memory is therefore that of one
  shard, whatever N is.
* Convolutions are grouped convolutions where TF can differentiate them (its oneDNN kernels, which
  `dlens_tf` turns on unless you set TF_ENABLE_ONEDNN_OPTS): a shard's teachers are stacked along
  the channel axis ([B, H, W, n * C]) and oneDNN convolves each teacher's channel group with its own
  filters, and takes float32 input gradients of even-sized inputs as one stride-1 grouped convolution
  (`_grouped_conv`); dense layers are batched matmuls; only the optimizer update is XLA-compiled. Elsewhere
  (`convolution="im2col"`, or "auto" without oneDNN) they are im2col strided slices and one batched
  matmul per layer, the whole shard step XLA-compiled: about half as fast (37 vs 19 ms per teacher
  and generator step on a 2-core AVX2 CPU), on any CPU. The one-hot label channels that the paper
  concatenates to each conv input are not convolved: their contribution
  `sum_k W[k, label] * valid[position, k]` is precomputed per class (and per kind of border position,
  `_label_term`) and added, which is exactly the paper's convolution with ~10x fewer multiply-adds.
* bfloat16 training arithmetic where the CPU has it (AVX-512 with oneDNN): with bfloat16 storage, the
  teacher updates' second convolution and first dense layer multiply in bfloat16 (float32
  accumulation inside oneDNN); conv1 and `call` stay float32 (see `ensemble_logits`), and so do the
  image gradients unless `image_gradient_dtype="bfloat16"`.
* Compact storage and optimizer state. Weights and Adam's first moment are stored in
  `weight_dtype` (bfloat16 by default, rounded to nearest; optimizer arithmetic is float32). The second
  moment is factored Adafactor-style for every kernel (one row and one column vector per matrix,
  full only for biases), so it costs almost nothing. Per parameter: 2 bytes of weight plus 2 bytes
  of first moment (none with `beta_1=0`), i.e. about 8.9 GB for 4000 paper-size MNIST teachers
  instead of 27 GB for float32 Adam. `weight_dtype="float32"` gives float32 storage and arithmetic. Where the
  updates compute in float32 (no bfloat16 arithmetic), their gradients reach the optimizer in float32.
* Fewer passes over the dense kernel, the teachers' largest tensor (2068 x 256 per MNIST teacher): the
  row and column means of its squared gradient come from the layer's inputs and output gradients
  (`_product_square_means`), and its input gradient keeps the kernel in its stored layout
  (`_batched_dense`); together 1.12x faster per 125-teacher shard and generator step (918 vs 820 ms,
  same-process A/B on a quiet 2-core AMX CPU). The optimizer update is two XLA computations, the
  moments and then the step from the stored moments, so each passes over the kernel once; with conv1
  in float32 (`ensemble_logits`), about 1.08x faster again per shard and step (same kind of A/B, a
  slower AMX CPU).

Teacher training (the paper's): each update is one Adam step (lr 1e-3, beta_1 0.5) on the standard
GAN loss `mean softplus(-D(real)) + mean softplus(D(fake))`. The changes above (bfloat16 storage and
arithmetic, factored second moment) touch only how teachers are trained and the precision of their image
gradients, never the mechanism that releases them: TopAgg on the teachers' image gradients, and its analysis,
are unchanged.

Teacher isolation: teacher i's forward pass, loss, gradients and optimizer state are computed from
its own slice of every stacked tensor, its own real batch and the shared synthetic batch only.
"""

import functools
import math
import warnings

import numpy as np
import tensorflow as tf
from tensorflow import keras


_KERNEL = 5
_STRIDE = 2
_LEAK = 0.2
_INIT_STDDEV = 0.02  # DCGAN initialisation, as in the paper's code.
_BN_EPSILON = 1e-5
_DENSE_KERNEL = 4  # index of "dense_kernel" in `parameter_shapes`


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive integer. Received: {name}={value!r}")
    return int(value)


def _positive_float(name, value, allow_zero=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        expected = "a number >= 0" if allow_zero else "a positive number"
        raise ValueError(f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}")
    return float(value)


def validate_image_shape(image_shape, name="image_shape"):
    """Returns `image_shape` as a tuple (H, W, C) of positive ints or raises ValueError naming `name`."""
    try:
        shape = tuple(int(d) for d in image_shape)
        ok = len(shape) == 3 and all(d > 0 for d in shape) and all(float(d) == int(d) for d in image_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected (height, width, channels) of positive integers. "
            f"Received: {name}={image_shape!r}"
        )
    return shape


def _out_size(size):
    return -(-size // _STRIDE)


def _valid_taps(h, w):
    """numpy [ho * wo, 25] float32: 1 where a kernel tap of an output position falls inside the image."""
    taps = _KERNEL * _KERNEL
    identity = tf.reshape(tf.eye(taps), [_KERNEL, _KERNEL, 1, taps])  # one output channel per tap
    valid = tf.nn.conv2d(tf.ones([1, h, w, 1]), identity, _STRIDE, "SAME")
    return tf.reshape(valid, [_out_size(h) * _out_size(w), taps]).numpy()


def default_widths(image_shape, num_classes):
    """The paper's discriminator widths: (C + classes, 32 + classes, 256)."""
    return (image_shape[-1] + num_classes, 32 + num_classes, 256)


def parameter_shapes(image_shape, num_classes, widths, batch_norm=False):
    """Per-teacher parameter names and shapes; kernels are [fan_in, fan_out] matrices.

    With `batch_norm`, the conv2 and dense batch normalisations' scales and offsets follow.
    """
    h, w, c = image_shape
    f1, f2, units = widths
    h2, w2 = _out_size(_out_size(h)), _out_size(_out_size(w))
    taps = _KERNEL * _KERNEL
    shapes = [
        ("conv1_kernel", (taps * (c + num_classes), f1)),
        ("conv1_bias", (f1,)),
        ("conv2_kernel", (taps * (f1 + num_classes), f2)),
        ("conv2_bias", (f2,)),
        ("dense_kernel", (h2 * w2 * f2 + num_classes, units)),
        ("dense_bias", (units,)),
        ("logit_kernel", (units + num_classes, 1)),
        ("logit_bias", (1,)),
    ]
    if batch_norm:
        shapes += [("conv2_bn_scale", (f2,)), ("conv2_bn_offset", (f2,)),
                   ("dense_bn_scale", (units,)), ("dense_bn_offset", (units,))]
    return shapes


def translate(x, max_shift, seed):
    """Each image of x [n, B, H, W, C] shifted by its own random (dy, dx) in [-max_shift, max_shift]^2.

    Pixels shifted in are -1 (background); the shifts are data-independent randomness from `seed`
    (a stateless seed, int32 [2]).
    """
    n, b, h, w = tf.shape(x)[0], tf.shape(x)[1], x.shape[2], x.shape[3]
    shifts = tf.random.stateless_uniform([2, n, b], seed, -max_shift, max_shift + 1, dtype=tf.int32)
    pad = [[0, 0], [0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]]
    padded = tf.pad(x, pad, constant_values=-1.0)
    rows = tf.range(h)[None, None, :] + max_shift - shifts[0][..., None]  # [n, B, H]
    cols = tf.range(w)[None, None, :] + max_shift - shifts[1][..., None]
    return tf.gather(tf.gather(padded, rows, axis=2, batch_dims=2), cols, axis=3, batch_dims=2)


def _batch_norm(z, axes, scale, offset):
    """(z - mean) / sqrt(var + 1e-5) * scale + offset, mean and (biased) var over `axes` of this batch."""
    mean, var = tf.nn.moments(z, axes, keepdims=True)
    return (z - mean) * tf.math.rsqrt(var + _BN_EPSILON) * scale + offset


@keras.saving.register_keras_serializable(package="dlens_tf")
class BatchStatisticsNormalization(keras.layers.Layer):
    """Batch normalisation that always uses the batch's own statistics (no moving averages).

    output = (x - mean) / sqrt(var + 1e-5) * scale + offset, mean and var per feature (last axis) over
    all other axes of the batch: Keras BatchNormalization in training mode, in every mode.
    """

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")
        self.offset = self.add_weight(name="offset", shape=(input_shape[-1],), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        return _batch_norm(x, list(range(len(x.shape) - 1)), self.scale, self.offset)


def build_discriminator(image_shape, num_classes, widths=None, batch_norm=False, name="discriminator"):
    """One teacher as a plain Keras model: the reference for `TeacherEnsemble`'s architecture.

    logit = dense(lrelu(dense(lrelu(conv(lrelu(conv(x ++ y)) ++ y)) ++ y)) ++ y), with 5x5 stride-2
    'SAME' convolutions, leaky ReLU (0.2), and the one-hot label y concatenated as constant channels
    to each conv input and as features to each dense input (the paper's conditional DCGAN
    discriminator). With `batch_norm`, the second convolution's and the hidden dense layer's outputs
    are batch-normalised before their activation with the batch's own statistics
    (`BatchStatisticsNormalization`), as in the official code, which runs its discriminator on real and
    fake batches separately and always in training mode. `get_weights()` is ordered like
    `TeacherEnsemble.teacher_weights(i)`.

    Input shape:
      `[x, y_onehot]` with x `[batch, H, W, C]` and y_onehot `[batch, num_classes]`.
    Output shape:
      `[batch, 1]` logits.
    """
    image_shape = validate_image_shape(image_shape)
    widths = tuple(widths) if widths is not None else default_widths(image_shape, num_classes)
    f1, f2, units = widths
    x_in = keras.Input(image_shape)
    y_in = keras.Input((num_classes,))

    def with_label_channels(h):
        maps = keras.layers.Reshape((1, 1, num_classes))(y_in)
        maps = keras.layers.UpSampling2D((h.shape[1], h.shape[2]))(maps)
        return keras.layers.Concatenate()([h, maps])

    act = lambda h: keras.layers.LeakyReLU(_LEAK)(h)  # noqa: E731
    norm = BatchStatisticsNormalization if batch_norm else lambda: (lambda h: h)  # noqa: E731
    h = act(keras.layers.Conv2D(f1, _KERNEL, _STRIDE, "same")(with_label_channels(x_in)))
    h = act(norm()(keras.layers.Conv2D(f2, _KERNEL, _STRIDE, "same")(with_label_channels(h))))
    h = keras.layers.Concatenate()([keras.layers.Flatten()(h), y_in])
    h = keras.layers.Concatenate()([act(norm()(keras.layers.Dense(units)(h))), y_in])
    return keras.Model([x_in, y_in], keras.layers.Dense(1)(h), name=name)


CONVOLUTIONS = ("auto", "grouped", "im2col")
IMAGE_GRADIENT_DTYPES = ("float32", "bfloat16")


@functools.lru_cache(maxsize=None)
def grouped_convolution_supported(dtype_name):
    """Whether this TF build differentiates grouped convolutions in `dtype_name` ("float32" / "bfloat16").

    TF's CPU kernels compute grouped convolution gradients only through oneDNN (on by default where the
    CPU has AVX-512 VNNI/BF16 or AMX; `TF_ENABLE_ONEDNN_OPTS=1` elsewhere), and bfloat16 ones only with
    AVX-512. The answer comes from running both gradient ops of one tiny grouped convolution, once per process.
    """
    with tf.init_scope():
        dtype = tf.as_dtype(dtype_name)
        x, k, dz = tf.ones([1, 5, 5, 2], dtype), tf.ones([_KERNEL, _KERNEL, 1, 2], dtype), tf.ones([1, 3, 3, 2], dtype)
        strides = [1, _STRIDE, _STRIDE, 1]
        try:
            tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=k, out_backprop=dz, strides=strides,
                                           padding="SAME").numpy()
            tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(k), out_backprop=dz, strides=strides,
                                            padding="SAME").numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError):
            return False
    return True


def _same_padding(size):
    total = max((_out_size(size) - 1) * _STRIDE + _KERNEL - size, 0)
    return total // 2, total - total // 2


def im2col(x):
    """5x5 stride-2 'SAME' patches: [..., H, W, C] -> [..., ceil(H/2), ceil(W/2), 25 * C].

    Strided slices of the padded input, so every TF build differentiates it. The last axis is ordered
    (kernel row, kernel column, channel), as a Keras Conv2D kernel [5, 5, C, F] reshaped to [25 * C, F].
    """
    h, w = x.shape[-3], x.shape[-2]
    ho, wo = _out_size(h), _out_size(w)
    x = tf.pad(x, [[0, 0]] * (x.shape.rank - 3) + [list(_same_padding(h)), list(_same_padding(w)), [0, 0]])
    return tf.concat([x[..., a : a + _STRIDE * (ho - 1) + 1 : _STRIDE, b : b + _STRIDE * (wo - 1) + 1 : _STRIDE, :]
                      for a in range(_KERNEL) for b in range(_KERNEL)], axis=-1)


# Input rows 2u + p (p = 0, 1) of a 5x5 stride-2 'SAME' convolution of an even-sized input receive output
# rows u - 1 + t (t = 0, 1, 2) through kernel rows _PHASE_TAPS[p][t]; 5 marks no tap.
_PHASE_TAPS = ((3, 1, 5), (4, 2, 0))


def _phase_kernel(kernel, groups):
    """[5, 5, cin, groups * F] -> [3, 3, F, groups * 4 * cin]: the input gradient's stride-1 kernel.

    Output channels are ordered (group, row parity, column parity, cin), as `_grouped_conv` unpacks them.
    """
    cin, f = kernel.shape[2], kernel.shape[3] // groups
    k = tf.pad(tf.reshape(kernel, [_KERNEL, _KERNEL, cin, groups, f]), [[0, 1], [0, 1], [0, 0], [0, 0], [0, 0]])
    taps = [a for phase in _PHASE_TAPS for a in phase]
    k = tf.gather(tf.gather(k, taps, axis=0), taps, axis=1)  # [(p_r, t_r), (p_c, t_c), cin, groups, F]
    k = tf.transpose(tf.reshape(k, [2, 3, 2, 3, cin, groups, f]), [1, 3, 6, 5, 0, 2, 4])
    return tf.reshape(k, [3, 3, f, groups * 4 * cin])


@tf.autograph.experimental.do_not_convert  # AutoGraph would unwrap the custom gradient
@tf.custom_gradient
def _grouped_conv(x, kernel):
    """5x5 stride-2 'SAME' grouped convolution: x [B, H, W, groups * cin] (H, W even), kernel [5, 5, cin, groups * F].

    Its input gradient is one stride-1 3x3 grouped convolution of the output gradient, whose channels
    are the four (row, column) parities of the input positions, then interleaved into place: the same
    sums as TF's stride-2 `Conv2DBackpropInput`, which oneDNN's float32 kernels run slower (2-core AVX2,
    125 teachers: conv2's input gradient for 30 records 59 vs 73 ms, conv1's for 15 records 14 vs 42 ms; see
    docs/benchmarks.md). The kernel gradient is TF's: its stride-1 counterpart was slower for conv2.
    """
    def grad(dz):
        b, (h, w, channels), cin = tf.shape(x)[0], x.shape[1:], kernel.shape[2]
        groups = channels // cin
        dx = tf.nn.conv2d(dz, _phase_kernel(kernel, groups), 1, "SAME")  # [B, H/2, W/2, groups * 4 * cin]
        dx = tf.transpose(tf.reshape(dx, [b, h // 2, w // 2, groups, 2, 2, cin]), [0, 1, 4, 2, 5, 3, 6])
        dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel), out_backprop=dz,
                                            strides=[1, _STRIDE, _STRIDE, 1], padding="SAME")
        return tf.reshape(dx, [b, h, w, channels]), dk
    return tf.nn.conv2d(x, kernel, _STRIDE, "SAME"), grad


@tf.autograph.experimental.do_not_convert  # AutoGraph would unwrap the custom gradient
def _label_term(k_label, bias, label, taps):
    """[B, P, n * F]: each record's label-channel term plus bias, per output position, teacher and filter.

    out[b, p, (i, f)] = sum_k taps[p, k] * k_label[k, (i, label[b, i], f)] + bias[i, f]. k_label
    [25, n * Y * F] float32 (flattened (teacher, class, filter)); bias [n, F]; label int32 [B, n]; taps
    numpy [P, 25] from `_valid_taps`.
    Positions whose taps fall inside the image alike share one term: a 5x5 stride-2 'SAME' convolution
    has at most 9 such kinds (top, middle or bottom rows, times columns), against 196 positions for conv1
    of a 28 x 28 image and 49 for conv2. So the terms are gathered per kind, [B, kinds, n * F], and copied
    to their positions in rows of n * F values; the gradient sums positions per kind first, then records
    per class. A per-position gather moves rows of F values, 22 (conv1) and 5 (conv2) times as many: for
    125 teachers and 30 records, forward and gradient took 27 and 16 ms that way against 10 and 10 here.
    """
    patterns, kinds = np.unique(np.asarray(taps, np.float32), axis=0, return_inverse=True)
    kinds = kinds.reshape(-1)
    members = np.eye(len(patterns), dtype=np.float32)[kinds]  # [P, kinds]: position p is of kind kinds[p]
    p, (n, f) = len(kinds), bias.shape
    num_classes = k_label.shape[1] // (n * f)
    rows = (tf.range(len(patterns))[None, :, None] * n + tf.range(n)) * num_classes + label[:, None, :]

    @tf.custom_gradient
    def term(k_label, bias):
        table = tf.reshape(tf.matmul(patterns, k_label), [-1, n, num_classes, f]) + bias[:, None, :]
        per_kind = tf.gather(tf.reshape(table, [-1, f]), rows)  # [B, kinds, n, F]

        def grad(dout):
            d_kind = tf.matmul(members, tf.reshape(dout, [-1, p, n * f]), transpose_a=True)  # [B, kinds, n * F]
            d_table = tf.math.unsorted_segment_sum(tf.reshape(d_kind, [-1, f]), tf.reshape(rows, [-1]),
                                                   len(patterns) * n * num_classes)
            d_table = tf.reshape(d_table, [len(patterns), n * num_classes * f])
            return (tf.matmul(patterns, d_table, transpose_a=True),
                    tf.reduce_sum(tf.reshape(d_table, [-1, n, num_classes, f]), [0, 2]))
        return tf.gather(tf.reshape(per_kind, [-1, len(patterns), n * f]), kinds, axis=1), grad
    return term(k_label, bias)


def _to_grouped(x):
    """[n, B, H, W, C] -> [B, H, W, n * C]: teachers stacked along channels, teacher-major."""
    n, b, h, w, c = x.shape
    return tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [-1 if b is None else b, h, w, n * c])


def _conditional_conv(h, y, kernel, bias, taps, compute_dtype, grouped, bn=None):
    """lrelu(norm(conv5x5s2(h ++ label channels) + bias)) for n teachers at once.

    y [n, B, Y] one-hot; kernel [n, 25 * (cin + Y), F]; bias [n, F]; taps [P, 25] from `_valid_taps`.
    grouped: h [B, H, W, n * cin] (`_to_grouped` layout), convolved as one grouped convolution (one
    group per teacher, oneDNN); otherwise h [n, B, H, W, cin], convolved as im2col + one batched
    matmul. The image channels multiply in `compute_dtype`; the label channels, constant maps,
    contribute `y @ (taps . W_label)` per teacher, added in float32 (grouped: gathered by label, so y
    must be exactly one-hot, as `TeacherEnsemble` makes it). bn: None (norm = identity) or
    (scale, offset) [n, F] each, batch normalisation with each teacher's batch statistics.
    Returns float32 [B, ceil(H/2), ceil(W/2), n * F] (grouped) or [n, B, ceil(H/2), ceil(W/2), F].
    """
    n, f, num_classes = kernel.shape[0], kernel.shape[-1], y.shape[-1]
    cin = h.shape[-1] // n if grouped else h.shape[-1]
    taps_n, p = _KERNEL * _KERNEL, taps.shape[0]
    k_image, k_label = tf.split(tf.reshape(kernel, [n, taps_n, cin + num_classes, f]), [cin, num_classes], 2)
    k_label = tf.reshape(tf.transpose(tf.cast(k_label, tf.float32), [1, 0, 2, 3]), [taps_n, n * num_classes * f])
    bias = tf.cast(bias, tf.float32)
    if grouped:
        k_image = tf.reshape(tf.transpose(tf.reshape(k_image, [n, _KERNEL, _KERNEL, cin, f]), [1, 2, 3, 0, 4]),
                             [_KERNEL, _KERNEL, cin, n * f])
        phased = compute_dtype == tf.float32 and h.shape[1] % 2 == 0 and h.shape[2] % 2 == 0
        conv = _grouped_conv if phased else functools.partial(tf.nn.conv2d, strides=_STRIDE, padding="SAME")
        z = tf.cast(conv(tf.cast(h, compute_dtype), tf.cast(k_image, compute_dtype)), tf.float32)
        label = tf.transpose(tf.argmax(y, -1, output_type=tf.int32))  # [B, n]
        z += tf.reshape(_label_term(k_label, bias, label, taps), tf.shape(z))
        if bn is not None:
            z = _batch_norm(z, [0, 1, 2], *(tf.reshape(tf.cast(v, tf.float32), [n * f]) for v in bn))
        return tf.nn.leaky_relu(z, _LEAK)
    per_class = tf.transpose(tf.reshape(tf.matmul(taps, k_label), [p, n, num_classes, f]), [1, 2, 0, 3])
    labels = tf.matmul(y, tf.reshape(per_class, [n, num_classes, p * f]))  # [n, B, P * F]
    patches = im2col(h)
    b, ho, wo = tf.shape(h)[1], patches.shape[2], patches.shape[3]
    z = tf.matmul(tf.cast(tf.reshape(patches, [n, -1, taps_n * cin]), compute_dtype),
                  tf.cast(tf.reshape(k_image, [n, taps_n * cin, f]), compute_dtype))
    z = tf.reshape(tf.cast(z, tf.float32), [n, b, p, f]) + tf.reshape(labels, [n, b, p, f]) + bias[:, None, None, :]
    if bn is not None:
        z = _batch_norm(z, [1, 2], *(tf.cast(v, tf.float32)[:, None, None, :] for v in bn))
    return tf.reshape(tf.nn.leaky_relu(z, _LEAK), [n, b, ho, wo, f])


@tf.autograph.experimental.do_not_convert  # AutoGraph would unwrap the custom gradient
@tf.custom_gradient
def _batched_dense(x, kernel):
    """x [n, B, I] @ kernel [n, I, O], with the input gradient computed as (kernel @ dz^T)^T.

    TF's own gradient, dz @ kernel^T, hands oneDNN the large kernel transposed, which its AMX
    bfloat16 matmul does not take: for 125 MNIST teachers it ran 2x slower (40 vs 19 ms at batch 15, one
    run on a busy AMX CPU) than this form, which transposes only the small dz and result.
    """
    def grad(dz):
        return tf.transpose(tf.matmul(kernel, dz, transpose_b=True), [0, 2, 1]), tf.matmul(x, dz, transpose_a=True)
    return tf.matmul(x, kernel), grad


def _product_square_means(a, d):
    """Row and column means of (a^T d)^2 per teacher, a [n, B, I] and d [n, B, O], without forming a^T d.

    For the dense kernel's gradient a^T d (a the layer's inputs, d the gradients at its outputs) this
    replaces two reductions over an [n, I, O] tensor, the largest of the teacher update, by B x B work:
    * rows: sum_o (a^T d)[i, o]^2 = |R a_i|^2 with d^T = QR. The records' output gradients are nearly
      parallel, so rows such as a label feature's, where real and fake records pull opposite ways,
      cancel; R keeps them as accurately as a^T d itself, where a Gram form a_i^T (d d^T) a_i would
      lose them in float32 (measured: a 21% error in a test row's Adam step). Householder QR also has
      no data-dependent iteration count, so a teacher's result never depends on another teacher's
      data (an eigendecomposition under XLA iterates until the whole batch converges).
    * columns: d_o^T (a a^T) d_o; the inputs span the batch, so columns do not cancel.
    Returns float32 ([n, I], [n, O]).
    """
    a, d = tf.cast(a, tf.float32), tf.cast(d, tf.float32)
    r = tf.linalg.qr(tf.transpose(d, [0, 2, 1]))[1]  # [n, min(O, B), B]
    rows = tf.reduce_sum(tf.square(tf.matmul(r, a)), 1)
    cols = tf.reduce_sum(d * tf.matmul(tf.matmul(a, a, transpose_b=True), d), 1)
    return rows / d.shape[-1], tf.maximum(cols, 0.0) / a.shape[-1]  # rounding could take cols below 0


def ensemble_logits(params, x, y, taps1, taps2, compute_dtype=tf.float32, grouped=False, dense_io=False):
    """Logits [n, B] of n teachers (stacked params) on their own images x [n, B, H, W, C].

    conv2 and the first dense layer multiply in `compute_dtype` (float32 or bfloat16, which oneDNN runs
    at up to twice float32's rate on AVX512-BF16 CPUs); everything else is float32, conv1 included (one
    input channel per teacher, where oneDNN's float32 kernel is the faster one). `grouped`
    picks grouped convolutions (see `grouped_convolution_supported`) over im2col matmuls. With 12
    params (`parameter_shapes(..., batch_norm=True)`), conv2 and the dense layer are batch-normalised
    over each teacher's B records. With `dense_io`, returns (logits, (input, output)) of the first dense
    layer's matmul, [n, B, I] and [n, B, O], from which its kernel gradient is input^T @ d(output).
    """
    k1, b1, k2, b2, k3, b3, k4, b4 = params[:8]
    bn2, bn3 = (params[8:10], params[10:12]) if len(params) == 12 else (None, None)
    n = k1.shape[0]
    h = _conditional_conv(_to_grouped(x) if grouped else x, y, k1, b1, taps1, tf.float32, grouped)
    h = tf.cast(_conditional_conv(h, y, k2, b2, taps2, compute_dtype, grouped, bn2), compute_dtype)
    if grouped:  # cast first: the transpose then moves bfloat16 values, half the bytes
        b, p, f = tf.shape(h)[0], h.shape[1] * h.shape[2], h.shape[3] // n
        flat = tf.reshape(tf.transpose(tf.reshape(h, [b, p, n, f]), [2, 0, 1, 3]), [n, b, p * f])
    else:
        flat = tf.reshape(h, [n, tf.shape(h)[1], h.shape[2] * h.shape[3] * h.shape[4]])
    dense_in = tf.concat([flat, tf.cast(y, compute_dtype)], -1)
    dense_out = _batched_dense(dense_in, tf.cast(k3, compute_dtype))
    h = tf.cast(dense_out, tf.float32) + tf.cast(b3, tf.float32)[:, None, :]
    if bn3 is not None:
        h = _batch_norm(h, [1], *(tf.cast(v, tf.float32)[:, None, :] for v in bn3))
    h = tf.nn.leaky_relu(h, _LEAK)
    logits = tf.squeeze(tf.matmul(tf.concat([h, y], -1), tf.cast(k4, tf.float32)), -1) + tf.cast(b4, tf.float32)
    return (logits, (dense_in, dense_out)) if dense_io else logits


@keras.saving.register_keras_serializable(package="dlens_tf")
class TeacherEnsemble(keras.Model):
    """N conditional DCGAN discriminators trained on disjoint data, computed as one batched step.

    logits[i, j] = D_i(x[i, j], y[i, j]) for the architecture of `build_discriminator`, with
    teacher i's weights the i-th slice of every stacked parameter. See the module docstring for
    the sharded, compact storage that lets thousands of teachers fit in memory.

    Args:
      num_teachers: number of teachers N.
      image_shape: (H, W, C) of the records.
      num_classes: number of classes of the one-hot labels.
      widths: (conv1 filters, conv2 filters, dense units); None = the paper's
        (C + num_classes, 32 + num_classes, 256).
      learning_rate: Adam step size of each teacher update.
      beta_1: Adam first-moment decay; 0 stores no first moment (halves optimizer memory).
      beta_2: decay of the factored second moment.
      epsilon: Adam's epsilon.
      weight_dtype: storage dtype of weights and first moments, "bfloat16" or "float32". With
        "bfloat16" and grouped convolutions on a CPU where oneDNN runs them in bfloat16 (AVX-512), the
        teacher updates' second convolution and first dense layer also multiply in bfloat16; else in float32.
      chunk_size: teachers per shard (peak working memory scales with it, not with N).
      convolution: "grouped" (oneDNN grouped convolutions, one group per teacher), "im2col" (strided
        slices and batched matmuls: any CPU and TF build), or "auto": grouped where this process can
        differentiate them (`grouped_convolution_supported`), else im2col with a warning.
      batch_norm: batch-normalise conv2 and the dense layer with each batch's own statistics, real and
        fake batches separately (the official code's discriminator; see `build_discriminator`). A
        teacher's gradient on one synthetic record then also depends on the other (public) synthetic
        records of its batch; each teacher still sees only its own partition.
      translation: 0, or the largest random shift in pixels of every real and fake image in the
        teachers' updates (DiffAugment-style translation: each image its own shift, background
        padded), so that teachers holding a few records learn shapes rather than their exact pixels.
        The shifts are data-independent randomness; image gradients are taken on the unshifted fakes.
      shared_init: start every teacher from the same initial weights (drawn from `seed`), as the
        official code nearly does (its 4000 teachers start from 50 weight sets). The initialisation is
        data-independent, so privacy is unchanged; teachers that start alike disagree only where their
        data differ, which raises their vote agreement (`apps/teacher_agreement.py`, 250 MNIST teachers
        after 10 updates: 0.64 -> 0.89).
      image_gradient_dtype: arithmetic of the released image gradients (`image_gradients`). "float32";
        or "bfloat16": their second convolution and first dense layer multiply in the updates' dtype
        (bfloat16 where the updates use it, see `weight_dtype`; else float32). In bfloat16 they differ
        from float32 by about 2% (relative L2), and a 125-teacher shard's generator step took about
        1.09x less CPU time (two same-process A/B runs on a 2-core AMX CPU), but synthetic-data utility
        fell in the mnist_eps1 proxy (docs/datalens_results.md), so the presets keep float32. Privacy is
        unchanged either way: TopAgg's bound holds for any gradient values.
      seed: integer seed of the weight initialisation; None draws one from OS entropy.

    Input shape:
      `(x, y)`: x `[B, H, W, C]` (shared by all teachers) or `[N, B, H, W, C]`; y int labels
      `[B]` / `[N, B]` or one-hot `[B, num_classes]` / `[N, B, num_classes]`. Pixels in [-1, 1].
    Output shape:
      `[N, B]` logits.
    """

    def __init__(self, num_teachers, image_shape, num_classes, widths=None, learning_rate=1e-3, beta_1=0.5,
                 beta_2=0.999, epsilon=1e-8, weight_dtype="bfloat16", chunk_size=125, convolution="auto", shared_init=False,
                 batch_norm=False, translation=0, image_gradient_dtype="float32", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_teachers = _positive_int("num_teachers", num_teachers)
        self.image_shape = validate_image_shape(image_shape)
        self.num_classes = _positive_int("num_classes", num_classes)
        if widths is None:
            widths = default_widths(self.image_shape, self.num_classes)
        if not isinstance(widths, (list, tuple)) or len(widths) != 3:
            raise ValueError(f"Received an invalid value for `widths`, expected 3 positive integers "
                             f"(conv1 filters, conv2 filters, dense units). Received: widths={widths!r}")
        self.widths = tuple(_positive_int("widths", w) for w in widths)
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        self.beta_1 = _positive_float("beta_1", beta_1, allow_zero=True)
        self.beta_2 = _positive_float("beta_2", beta_2, allow_zero=True)
        for name, value in (("beta_1", self.beta_1), ("beta_2", self.beta_2)):
            if value >= 1:
                raise ValueError(f"Received an invalid value for `{name}`, expected a number in [0, 1). "
                                 f"Received: {name}={value!r}")
        self.epsilon = _positive_float("epsilon", epsilon)
        if weight_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"Received an invalid value for `weight_dtype`, expected 'bfloat16' or 'float32'. "
                             f"Received: weight_dtype={weight_dtype!r}")
        self.weight_dtype = weight_dtype
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        if convolution not in CONVOLUTIONS:
            raise ValueError(f"Received an invalid value for `convolution`, expected one of {CONVOLUTIONS}. "
                             f"Received: convolution={convolution!r}")
        supported = grouped_convolution_supported("float32")
        if convolution == "grouped" and not supported:
            raise ValueError("Received an invalid value for `convolution`: this TensorFlow process cannot differentiate "
                             "grouped convolutions (they need TF's oneDNN kernels: set TF_ENABLE_ONEDNN_OPTS=1, or import "
                             "dlens_tf, before TensorFlow). Use 'im2col' or 'auto'. Received: convolution='grouped'")
        self.convolution = convolution
        self._grouped = convolution == "grouped" or (convolution == "auto" and supported)
        if convolution == "auto" and not supported:
            warnings.warn("TeacherEnsemble uses im2col convolutions, about half as fast as grouped ones on CPU: TF's "
                          "oneDNN kernels are off in this process. Set TF_ENABLE_ONEDNN_OPTS=1, or import dlens_tf "
                          "before TensorFlow, to use them.", RuntimeWarning, stacklevel=2)
        # bfloat16 arithmetic only where oneDNN runs it natively (AVX-512); emulated it is slower than float32.
        bf16 = self.weight_dtype == "bfloat16" and self._grouped and grouped_convolution_supported("bfloat16")
        self._matmul_dtype = tf.bfloat16 if bf16 else tf.float32
        if image_gradient_dtype not in IMAGE_GRADIENT_DTYPES:
            raise ValueError(f"Received an invalid value for `image_gradient_dtype`, expected one of "
                             f"{IMAGE_GRADIENT_DTYPES}. Received: image_gradient_dtype={image_gradient_dtype!r}")
        self.image_gradient_dtype = image_gradient_dtype
        self._gradient_dtype = self._matmul_dtype if image_gradient_dtype == "bfloat16" else tf.float32
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"Received an invalid value for `seed`, expected an integer or None. Received: seed={seed!r}")
        if not isinstance(shared_init, (bool, np.bool_)):
            raise ValueError(f"Received an invalid value for `shared_init`, expected a bool. "
                             f"Received: shared_init={shared_init!r}")
        self.shared_init = bool(shared_init)
        if not isinstance(batch_norm, (bool, np.bool_)):
            raise ValueError(f"Received an invalid value for `batch_norm`, expected a bool. Received: batch_norm={batch_norm!r}")
        self.batch_norm = bool(batch_norm)
        if isinstance(translation, bool) or not isinstance(translation, (int, np.integer)) or not (
                0 <= translation < min(self.image_shape[:2])):
            raise ValueError(f"Received an invalid value for `translation`, expected an integer shift in "
                             f"[0, {min(self.image_shape[:2])}). Received: translation={translation!r}")
        self.translation = int(translation)
        self.seed = None if seed is None else int(seed)
        self._init_seed = self.seed if self.seed is not None else int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        self._shapes = parameter_shapes(self.image_shape, self.num_classes, self.widths, self.batch_norm)
        h, w, _ = self.image_shape
        self._taps1 = _valid_taps(h, w)
        self._taps2 = _valid_taps(_out_size(h), _out_size(w))
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="teacher_iterations")
        self.shard_bounds = [(s, min(s + self.chunk_size, self.num_teachers))
                             for s in range(0, self.num_teachers, self.chunk_size)]
        self.shards = [self._make_shard(index, stop - start) for index, (start, stop) in enumerate(self.shard_bounds)]
        # Never inlined into the caller's graph: an inlined shard's float32 weight copies and gradients
        # stayed alive until the whole step ended (+3 GB per 1000 teachers, measured), not one shard.
        self._run_shard = tf.function(self._shard_computation, jit_compile=not self._grouped,
                                      experimental_attributes={"_noinline": True})
        self._apply_moments = tf.function(self._update_moments, jit_compile=True)
        self._apply_step = tf.function(self._update_params, jit_compile=True)

    # ----------------------------------------------------------------------------------- state
    def _factored(self, shape):
        return len(shape) == 2 and min(shape) > 1

    def _make_shard(self, index, n):
        dtype = tf.as_dtype(self.weight_dtype)
        params, first, second = [], [], []
        for j, (name, shape) in enumerate(self._shapes):
            full = (n,) + shape
            if name.endswith("kernel") and self.shared_init:  # cast, then broadcast: no float32 copy of the shard
                one = tf.random.stateless_normal(shape, [self._init_seed, j], stddev=_INIT_STDDEV)
                init = tf.broadcast_to(tf.cast(one, dtype), full)
            elif name.endswith("kernel"):
                init = tf.cast(tf.random.stateless_normal(full, [self._init_seed, index * 64 + j], stddev=_INIT_STDDEV),
                               dtype)
            else:
                init = tf.ones(full, dtype) if name.endswith("scale") else tf.zeros(full, dtype)
            params.append(tf.Variable(init, trainable=False, name=f"shard{index}/{name}"))
            if self.beta_1 > 0:
                first.append(tf.Variable(tf.zeros(full, dtype), trainable=False, name=f"shard{index}/{name}_m"))
            if self._factored(shape):
                second.append([
                    tf.Variable(tf.zeros((n, shape[0])), trainable=False, name=f"shard{index}/{name}_vr"),
                    tf.Variable(tf.zeros((n, shape[1])), trainable=False, name=f"shard{index}/{name}_vc"),
                ])
            else:
                second.append([tf.Variable(tf.zeros(full), trainable=False, name=f"shard{index}/{name}_v")])
        return {"params": params, "m": first, "v": second}

    def teacher_weights(self, i):
        """Teacher i's weights as numpy float32 arrays, ordered and shaped as `build_discriminator`'s."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.num_teachers:
            raise ValueError(f"Received an invalid value for `i`, expected a teacher index in "
                             f"[0, {self.num_teachers}). Received: i={i!r}")
        shard = int(i) // self.chunk_size
        local = int(i) - self.shard_bounds[shard][0]
        c, y, (f1, f2, _) = self.image_shape[-1], self.num_classes, self.widths
        out = [tf.cast(v[local], tf.float32).numpy() for v in self.shards[shard]["params"]]
        out[0] = out[0].reshape(_KERNEL, _KERNEL, c + y, f1)
        out[2] = out[2].reshape(_KERNEL, _KERNEL, f1 + y, f2)
        if self.batch_norm:  # each normalisation after its layer, as in build_discriminator
            out = out[:4] + out[8:10] + out[4:6] + out[10:12] + out[6:8]
        return out

    @property
    def convolution_in_use(self):
        """"grouped" or "im2col": what `convolution` resolved to in this process."""
        return "grouped" if self._grouped else "im2col"

    def num_parameters(self):
        """Parameters per teacher times N."""
        return self.num_teachers * sum(int(np.prod(s)) for _, s in self._shapes)

    # ----------------------------------------------------------------------------- computation
    def _onehot(self, y, batch_rank, name):
        y = tf.convert_to_tensor(y)
        if y.shape.rank == batch_rank + 1:
            if y.shape[-1] != self.num_classes:
                raise ValueError(f"Received an invalid value for `{name}`, expected one-hot labels with "
                                 f"{self.num_classes} classes. Received: {name}.shape={y.shape}")
            if tf.executing_eagerly():  # the grouped convolutions gather the label term by argmax
                values = y.numpy()
                if not (np.isin(values, (0, 1)).all() and (values.sum(-1) == 1).all()):
                    raise ValueError(f"Received an invalid value for `{name}`, expected one-hot labels: rows of "
                                     f"zeros with a single 1. Received: {name} with other values")
            return tf.cast(y, tf.float32)
        if y.shape.rank != batch_rank or not y.dtype.is_integer:
            raise ValueError(f"Received an invalid value for `{name}`, expected integer labels of rank {batch_rank} "
                             f"or one-hot labels of rank {batch_rank + 1}. Received: {name}.shape={y.shape}, "
                             f"dtype={y.dtype.name}")
        if tf.executing_eagerly():
            values = y.numpy()
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(f"Received an invalid value for `{name}`, expected labels in "
                                 f"[0, {self.num_classes}). Received: min={values.min()}, max={values.max()}")
        return tf.one_hot(y, self.num_classes)

    def _check_images(self, x, name, batch_rank):
        x = tf.convert_to_tensor(x, tf.float32)
        if x.shape.rank != batch_rank + 3 or tuple(x.shape[batch_rank:]) != self.image_shape:
            raise ValueError(f"Received an invalid value for `{name}`, expected images of shape "
                             f"{('...',) * batch_rank + self.image_shape} matching `image_shape`. "
                             f"Received: {name}.shape={x.shape}")
        if batch_rank == 2 and x.shape[0] is not None and x.shape[0] != self.num_teachers:
            raise ValueError(f"Received an invalid value for `{name}`, expected one row per teacher "
                             f"({self.num_teachers}). Received: {name}.shape={x.shape}")
        return x

    def _update_moments(self, shard, grads, dense_square_means):
        """Adam's first and factored second moments of every stacked parameter of a shard, in place.

        dense_square_means: the row and column means of the dense kernel's squared gradient
        (`_product_square_means`), which spares the update two reductions over its largest tensor.
        """
        for j, g in enumerate(grads):
            g = tf.cast(g, tf.float32)
            if self.beta_1 > 0:
                m = self.beta_1 * tf.cast(shard["m"][j], tf.float32) + (1.0 - self.beta_1) * g
                shard["m"][j].assign(tf.cast(m, shard["m"][j].dtype))
            slots = shard["v"][j]
            if len(slots) == 2:
                if j == _DENSE_KERNEL:
                    rows, cols = (mean + 1e-30 for mean in dense_square_means)
                else:
                    g2 = tf.square(g) + 1e-30
                    rows, cols = tf.reduce_mean(g2, -1), tf.reduce_mean(g2, -2)
                slots[0].assign(self.beta_2 * slots[0] + (1.0 - self.beta_2) * rows)
                slots[1].assign(self.beta_2 * slots[1] + (1.0 - self.beta_2) * cols)
            else:
                slots[0].assign(self.beta_2 * slots[0] + (1.0 - self.beta_2) * (tf.square(g) + 1e-30))

    def _update_params(self, shard, grads, t):
        """The Adam step t of every stacked parameter of a shard from the moments as stored.

        A separate XLA computation from `_update_moments`: in one, XLA copied the first moment before
        overwriting it and recomputed it for the step (about 1.8x the memory traffic of the two).
        grads: used as the first moment when beta_1 = 0 (none is stored), else None.
        """
        lr_t = self.learning_rate * tf.sqrt(1.0 - self.beta_2 ** t)
        if self.beta_1 > 0:
            lr_t /= 1.0 - self.beta_1 ** t
        for j, p in enumerate(shard["params"]):
            m = tf.cast(shard["m"][j] if grads is None else grads[j], tf.float32)
            slots = shard["v"][j]
            if len(slots) == 2:  # sqrt(vr vc^T / mean(vr)) as an outer product of square roots
                vr, vc = slots
                root = tf.sqrt(vr / tf.reduce_mean(vr, -1, keepdims=True))[:, :, None] * tf.sqrt(vc)[:, None, :]
            else:
                root = tf.sqrt(slots[0])
            p.assign(tf.cast(tf.cast(p, tf.float32) - lr_t * m / (root + self.epsilon), p.dtype))

    def _shard_computation(self, shard, real_x, real_y, train_x, train_y, fake_x, fake_y, position, with_gradients):
        """`steps` updates of one shard's teachers, then (optionally) their image gradients.

        real_x [steps, n, m, H, W, C]; real_y [steps, n, m, Y]; train_x [steps, n, mt, H, W, C] and
        train_y [steps, n, mt, Y], each teacher's own fakes for the updates, or None (the updates use
        the shared fakes); fake_x [mf, H, W, C]; fake_y [mf, Y]; position int64 [2]: the teachers' update
        count before this call and the shard's first teacher.
        Returns (sum of the per-teacher discriminator losses, image gradients [n, mf, H, W, C] or []).
        """
        n, m = shard["params"][0].shape[0], tf.shape(real_x)[2]
        t0, shard_start = position[0], position[1]
        fake_x_n = tf.broadcast_to(fake_x[None], tf.concat([[n], tf.shape(fake_x)], 0))
        fake_y_n = tf.broadcast_to(fake_y[None], tf.concat([[n], tf.shape(fake_y)], 0))
        loss_sum = tf.constant(0.0)
        for s in range(real_x.shape[0]):
            step_real_x = real_x[s]
            step_fake_x = fake_x_n if train_x is None else train_x[s]
            step_fake_y = fake_y_n if train_y is None else train_y[s]
            if self.translation:
                fold = tf.random.experimental.stateless_fold_in
                seed = fold(fold(tf.constant([self._init_seed, 7]), t0 + s), shard_start)
                step_real_x = translate(step_real_x, self.translation, fold(seed, 0))
                step_fake_x = translate(step_fake_x, self.translation, fold(seed, 1))
            # Differentiated in the updates' arithmetic: with bfloat16 storage and float32 arithmetic, TF
            # would otherwise round every gradient to bfloat16 (the cast's gradient) before the optimizer.
            params = [tf.cast(p, self._matmul_dtype) for p in shard["params"]]
            with tf.GradientTape() as tape:
                tape.watch(params)
                if self.batch_norm:  # real and fake batches each with their own statistics
                    (real_logits, real_io), (fake_logits, fake_io) = (
                        ensemble_logits(params, bx, by, self._taps1, self._taps2, self._matmul_dtype, self._grouped,
                                        dense_io=True)
                        for bx, by in ((step_real_x, real_y[s]), (step_fake_x, step_fake_y)))
                    dense_io = [real_io, fake_io]
                else:
                    logits, io = ensemble_logits(params, tf.concat([step_real_x, step_fake_x], 1),
                                                 tf.concat([real_y[s], step_fake_y], 1), self._taps1, self._taps2,
                                                 self._matmul_dtype, self._grouped, dense_io=True)
                    real_logits, fake_logits = logits[:, :m], logits[:, m:]
                    dense_io = [io]
                losses = (tf.reduce_mean(tf.nn.softplus(-real_logits), 1)
                          + tf.reduce_mean(tf.nn.softplus(fake_logits), 1))
                total = tf.reduce_sum(losses)
            grads = tape.gradient(total, params + [out for _, out in dense_io])
            square_means = _product_square_means(tf.concat([inp for inp, _ in dense_io], 1),
                                                tf.concat(grads[len(params):], 1))
            self._apply_moments(shard, grads[:len(params)], square_means)
            self._apply_step(shard, None if self.beta_1 > 0 else grads[:len(params)], tf.cast(t0 + s + 1, tf.float32))
            loss_sum += total
        if not with_gradients:
            return loss_sum, tf.zeros([0])
        params = [tf.identity(p) for p in shard["params"]]
        with tf.GradientTape() as tape:
            tape.watch(fake_x_n)
            logits = ensemble_logits(params, fake_x_n, fake_y_n, self._taps1, self._taps2, self._gradient_dtype,
                                     self._grouped)
            generator_loss = tf.reduce_sum(tf.reduce_mean(tf.nn.softplus(-logits), 1))
        return loss_sum, -tape.gradient(generator_loss, fake_x_n)

    def train_and_image_gradients(self, real_batches, fake_x, fake_y, steps, with_gradients=True):
        """`steps` updates of every teacher, then every teacher's image gradients on the fake batch.

        Args:
          real_batches: callable `(start, stop) -> (x, y)` returning teachers [start, stop)'s real
            batches, x `[steps, stop - start, m, H, W, C]` and y int `[steps, stop - start, m]` (or
            one-hot); it is called once per shard, so the real data of all N teachers never needs
            to be materialised at once. It may instead return `(x, y, fx, fy)`, with fx
            `[steps, stop - start, mt, H, W, C]` and labels fy each teacher's own synthetic records
            for its updates (e.g. generated with its real batch's labels); by default the updates
            use the shared fake batch.
          fake_x: `[mf, H, W, C]` synthetic records shared by all teachers, in [-1, 1].
          fake_y: their labels, int `[mf]` or one-hot `[mf, num_classes]`.
          steps: number of discriminator updates (Python int >= 0).
          with_gradients: also return the image gradients.

        Returns:
          (mean discriminator loss over teachers and steps, gradients `[N, mf, H, W, C]` or None)
          where gradients[i, j] = -dL_G^(i)/dx at fake_x[j], L_G^(i) = mean_j softplus(-D_i(x_j)).
        """
        fake_x = self._check_images(fake_x, "fake_x", 1)
        fake_y = self._onehot(fake_y, 1, "fake_y")
        outputs, losses, grads = [], [], []
        start_t = self.iterations.read_value()
        for index, (start, stop) in enumerate(self.shard_bounds):
            with tf.control_dependencies(outputs):  # shards run one after another: bounded memory
                train_x = train_y = None
                if steps:
                    batches = real_batches(start, stop)
                    real_x, real_y = batches[0], self._onehot(batches[1], 3, "real_y")
                    if len(batches) == 4:
                        train_x = self._check_images(batches[2], "fx", 3)
                        train_y = self._onehot(batches[3], 3, "fy")
                else:
                    real_x = tf.zeros([0, stop - start, 0] + list(self.image_shape))
                    real_y = tf.zeros([0, stop - start, 0, self.num_classes])
                shard = self.shards[index]
                plain = {"params": list(shard["params"]), "m": list(shard["m"]), "v": [list(v) for v in shard["v"]]}
                # Not constants: TF would specialise the shard function per constant argument (and its
                # memory grew from 0.2 to 0.5 float32 weight copies in the graph-step memory test).
                position = tf.stack([start_t, tf.constant(start, tf.int64)])
                loss, g = self._run_shard(plain, real_x, real_y, train_x, train_y, fake_x, fake_y, position,
                                          with_gradients)
            outputs = [loss, g]
            losses.append(loss)
            grads.append(g)
        if steps:
            with tf.control_dependencies(outputs):
                self.iterations.assign_add(steps)
        mean_loss = tf.add_n(losses) / float(max(steps, 1) * self.num_teachers)
        return mean_loss, (tf.concat(grads, 0) if with_gradients else None)

    def teacher_step(self, real_x, real_y, fake_x, fake_y):
        """One discriminator update of every teacher; returns the mean loss.

        Args:
          real_x: `[N, m, H, W, C]` in [-1, 1]; row i is teacher i's batch from its own partition.
          real_y: int `[N, m]` or one-hot `[N, m, num_classes]`.
          fake_x: `[mf, H, W, C]` synthetic batch shared by all teachers, or `[N, mf, H, W, C]`, row i
            teacher i's own synthetic batch.
          fake_y: int `[mf]` / `[N, mf]` or one-hot labels.
        """
        real_x = self._check_images(real_x, "real_x", 2)
        real_y = self._onehot(real_y, 2, "real_y")
        if tf.convert_to_tensor(fake_x).shape.rank == 4:
            batches = lambda a, b: (real_x[None, a:b], real_y[None, a:b])  # noqa: E731
        else:
            own_x = self._check_images(fake_x, "fake_x", 2)
            own_y = self._onehot(fake_y, 2, "fake_y")
            fake_x, fake_y = own_x[0], own_y[0]  # not used by the updates
            batches = lambda a, b: (real_x[None, a:b], real_y[None, a:b], own_x[None, a:b], own_y[None, a:b])  # noqa: E731
        loss, _ = self.train_and_image_gradients(batches, fake_x, fake_y, 1, with_gradients=False)
        return loss

    def image_gradients(self, fake_x, fake_y):
        """`[N, mf, H, W, C]`: g[i, j] = -dL_G^(i)/dx at fake_x[j], the direction that makes teacher i call x_j real."""
        return self.train_and_image_gradients(None, fake_x, fake_y, 0)[1]

    def train_step(self, data):
        """Keras `fit` support: data = ((real_x, real_y, fake_x, fake_y),) as in `teacher_step`."""
        real_x, real_y, fake_x, fake_y = data[0] if len(data) == 1 else data
        return {"d_loss": self.teacher_step(real_x, real_y, fake_x, fake_y)}

    def call(self, inputs):
        x, y = inputs
        shared = tf.convert_to_tensor(x).shape.rank == 4
        x = self._check_images(x, "x", 1 if shared else 2)
        y = self._onehot(y, 1 if shared else 2, "y")
        logits = []
        for index, (start, stop) in enumerate(self.shard_bounds):
            params = self.shards[index]["params"]
            n = stop - start
            xs = tf.broadcast_to(x[None], [n] + x.shape.as_list()) if shared else x[start:stop]
            ys = tf.broadcast_to(y[None], [n] + y.shape.as_list()) if shared else y[start:stop]
            logits.append(ensemble_logits(params, xs, ys, self._taps1, self._taps2, grouped=self._grouped))
        return tf.concat(logits, 0)

    def get_config(self):
        config = super().get_config()
        config.update(num_teachers=self.num_teachers, image_shape=self.image_shape, num_classes=self.num_classes,
                      widths=self.widths, learning_rate=self.learning_rate, beta_1=self.beta_1, beta_2=self.beta_2,
                      epsilon=self.epsilon, weight_dtype=self.weight_dtype, chunk_size=self.chunk_size,
                      convolution=self.convolution, shared_init=self.shared_init, batch_norm=self.batch_norm,
                      translation=self.translation, image_gradient_dtype=self.image_gradient_dtype, seed=self.seed)
        return config
