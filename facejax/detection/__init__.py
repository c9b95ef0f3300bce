"""Face detection: MTCNN (Zhang et al., 2016) in JAX, batched and jitted.

    from facejax import detection
    detector = detection.MTCNN(min_face_size=20)
    boxes, scores, landmarks = detector.detect(image)  # HxWx3 uint8 RGB

The networks (:mod:`~facejax.detection.nets`), the released weights read
safely from the ``mtcnn`` package (:mod:`~facejax.detection.weights`,
:mod:`~facejax.detection.joblib_arrays`), the image pyramid
(:mod:`~facejax.detection.pyramid`), crops (:mod:`~facejax.detection.crops`),
box arithmetic (:mod:`~facejax.detection.boxes`), NMS
(:mod:`~facejax.detection.nms`), the three stages
(:mod:`~facejax.detection.cascade`) and the detector itself
(:mod:`~facejax.detection.mtcnn`). Importing this package imports neither
tensorflow nor the ``mtcnn`` package.
"""
from facejax.detection.mtcnn import MTCNN
from facejax.detection.weights import WeightsError

__all__ = ['MTCNN', 'WeightsError']
