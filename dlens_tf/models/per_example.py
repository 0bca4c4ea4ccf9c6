"""Per-example gradients by vectorising a one-example gradient over the batch, and joint L2 clipping.

`tf.vectorized_map` turns the gradient of one example into batched ops. TensorFlow 2.15's
vectoriser has no batched rule for the filter gradient of `Conv2D` with per-example inputs and
falls back to a serial while_loop over the batch (hundreds of small kernels); while our
gradients are vectorised we install a batched rule instead:
  dW[i] = sum_p patches(x[i])[p] (outer) dy[i][p]
(image patches of the input, one einsum). The rule is swapped in only for the duration of the
trace and restored afterwards, so no other code sees it.
"""

import contextlib

import tensorflow as tf
from tensorflow.python.ops.parallel_for import pfor as _pfor  # pylint: disable=g-direct-tensorflow-import

_CONV_FILTER_OP = "Conv2DBackpropFilter"
_STOCK_CONV_FILTER_RULE = _pfor._pfor_converter_registry[_CONV_FILTER_OP]  # pylint: disable=protected-access


def _batched_conv2d_filter_grad(pfor_input):
    inputs, inputs_stacked, _ = pfor_input.input(0)
    sizes = tf.get_static_value(pfor_input.unstacked_input(1))
    padding = pfor_input.get_attr("padding").decode()
    if (
        not inputs_stacked
        or sizes is None
        or padding not in ("SAME", "VALID")
        or pfor_input.get_attr("data_format") != b"NHWC"
    ):
        return _STOCK_CONV_FILTER_RULE(pfor_input)
    pfor_input.stack_inputs(stack_indices=[2])
    out_grads = pfor_input.stacked_input(2)  # [n, b, h', w', c_out]; b = 1 per example here
    kh, kw, c_in, c_out = (int(v) for v in sizes)
    shape = tf.shape(inputs)  # [n, b, h, w, c_in]
    patches = tf.image.extract_patches(
        tf.reshape(inputs, tf.concat([[-1], shape[2:]], 0)),
        sizes=[1, kh, kw, 1],
        strides=list(pfor_input.get_attr("strides")),
        rates=list(pfor_input.get_attr("dilations")),
        padding=padding,
    )
    patches = tf.reshape(patches, tf.stack([shape[0], -1, kh * kw * c_in]))
    out_grads = tf.reshape(out_grads, tf.stack([shape[0], -1, c_out]))
    grads = tf.einsum("npk,npc->nkc", patches, out_grads)
    return _pfor.wrap(tf.reshape(grads, tf.stack([shape[0], kh, kw, c_in, c_out])), True)


@contextlib.contextmanager
def _batched_conv_rules():
    registry = _pfor._pfor_converter_registry  # pylint: disable=protected-access
    registry[_CONV_FILTER_OP] = _batched_conv2d_filter_grad
    try:
        yield
    finally:
        registry[_CONV_FILTER_OP] = _STOCK_CONV_FILTER_RULE


def per_example_gradients(model, loss_fn, x, y):
    """grads[v][i] = d loss_fn(y[i], model(x[i])) / d v for every trainable variable v of `model`.

    Args:
      model: a Keras model; it sees one example at a time (batch of 1), so layers whose output
        mixes examples (batch normalisation) are not per-example and must not be used.
      loss_fn: (y_true, y_pred) -> per-example losses [1, ...]; extra axes are averaged.
      x, y: batched inputs and targets (nested structures allowed), batch size B.

    Returns:
      (grads, predictions, losses): a list of [B, *v.shape] tensors in the order of
      `model.trainable_variables`, the model outputs [B, ...] and the per-example losses [B].
    """
    variables = model.trainable_variables

    def one(example):
        xi, yi = tf.nest.map_structure(lambda t: t[None], example)
        with tf.GradientTape() as tape:
            pred = model(xi, training=True)
            loss = tf.reduce_mean(loss_fn(yi, pred))
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads, tf.nest.map_structure(lambda t: t[0], pred), loss

    with _batched_conv_rules():
        return tf.vectorized_map(one, (x, y))


def clip_jointly(grads, l2_norm_clip):
    """Flattens per-example gradients to [B, D] and scales each row to L2 norm <= `l2_norm_clip`.

    row_i <- row_i * min(1, C / ||row_i||), the norm taken over all variables together.
    Returns (clipped [B, D], norms before clipping [B]).
    """
    flat = tf.concat([tf.reshape(g, [-1, g.shape[1:].num_elements()]) for g in grads], axis=1)
    norms = tf.norm(flat, axis=1)
    scale = tf.minimum(1.0, l2_norm_clip / tf.maximum(norms, 1e-12))
    return flat * scale[:, None], norms
