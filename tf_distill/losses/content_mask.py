"""StyleKD's content-aware KD mask: keep the face, drop background and cloth (spec C.4 and G).

Why: the reference always multiplies the teacher's and the student's final images by this mask
before the RGB L1 and LPIPS losses, so the student is not asked to copy backgrounds and clothes.
The mask is computed from the teacher image only, exactly as the reference does:

    x -> ((x + 1) / 2).clamp(0, 1) -> bilinear (align_corners=False) to 512 -> ImageNet mean/std
      -> BiSeNet main output -> argmax -> class not in {0 background, 16 cloth}
      -> bilinear (align_corners=False) back to the image size -> > 0.5

Both resizes are PyTorch ``F.interpolate(mode='bilinear', align_corners=False)`` without
antialiasing, i.e. ``tf.image.resize(method='bilinear', antialias=False)`` (half-pixel centers).
For a 256 px image the way back, 512 -> 256, is then exactly the 2x2 average, so a pixel is kept
when at least 3 of its 4 parsed pixels are face; for other sizes it is the general bilinear
sampling (e.g. 512 -> 64 averages the two middle rows and columns of each 8x8 block).

Everything is plain TF ops on the replica's own images, so it runs inside a ``tf.function`` and
under ``strategy.run``; no gradient flows into the mask.
"""

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXCLUDED_CLASSES = (0, 16)  # background, cloth
PARSE_SIZE = 512


def _bilinear(x, size):
    """PyTorch ``F.interpolate(x, size, mode='bilinear', align_corners=False)`` (no antialias)."""
    return tf.image.resize(x, size, method="bilinear", antialias=False)


def parse_faces(parser, images, parse_size=PARSE_SIZE):
    """Class map [N, parse_size, parse_size] (int32) of generator images NHWC in [-1, 1], as the reference
    parses them (``parser``: a :class:`~tf_distill.models.face_parsing.FaceParsingNet`)."""
    x = tf.clip_by_value((tf.stop_gradient(tf.cast(images, tf.float32)) + 1.0) / 2.0, 0.0, 1.0)
    x = _bilinear(x, (parse_size, parse_size))
    x = (x - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
    return tf.argmax(parser(x)[0], axis=-1, output_type=tf.int32)


def content_mask(parser, teacher_images, parse_size=PARSE_SIZE):
    """The float mask [N, H, W, 1] (1 = face pixel) of teacher images NHWC in [-1, 1]; carries no gradient."""
    classes = parse_faces(parser, teacher_images, parse_size)
    keep = tf.reduce_all(tf.stack([classes != c for c in EXCLUDED_CLASSES]), axis=0)
    keep = _bilinear(tf.cast(keep, tf.float32)[..., None], tf.shape(teacher_images)[1:3])
    return tf.stop_gradient(tf.cast(keep > 0.5, tf.float32))


def apply_content_mask(mask, teacher_images, student_images):
    """(teacher * mask, student * mask): masked pixels become 0 in both, channels broadcast."""
    return teacher_images * tf.cast(mask, teacher_images.dtype), student_images * tf.cast(mask, student_images.dtype)
