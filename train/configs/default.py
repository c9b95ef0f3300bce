"""The default: a small IResNet with ArcFace on the embedded synthetic data.

Trains in about 100 s on 2 CPU cores (with facejax.cpu_host's settings, as
make demo runs it) and verifies held-out synthetic identities far above the
raw-pixel baseline (see the README).

    python -m train --config train/configs/default.py --workdir runs/default
"""

import ml_collections


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 400
  c.batch_size = 64
  c.micro_batches = 1
  c.compute_dtype = 'float32'
  c.num_classes = 0  # 0: as many as the data has
  c.init_from = ''  # a run's workdir: start from its backbone (fine-tuning)
  # model: devices on the class axis (-1: all); data = the rest.
  # shard_backbone: FSDP, large backbone parameters split over all devices.
  c.mesh = dict(model=1, shard_backbone=False)

  c.data = ml_collections.ConfigDict()
  c.data.source = 'synthetic'  # or an image folder, a .rec, a TFRecords dir
  c.data.synthetic = dict(num_identities=300, images_per_identity=20, seed=0)
  c.data.landmarks_file = ''
  c.data.image_size = 56
  c.data.augmentation = dict(flip=True, min_crop_scale=1.0, brightness=0.0,
                             contrast=0.0, saturation=0.0, hue=0.0)
  c.data.identities_per_batch = 0  # P x K batches when > 0
  c.data.images_per_identity = 0
  # Images whose header declares more pixels are skipped, not decoded
  # (decompression bombs); 0: no limit.
  c.data.max_pixels = 40_000_000

  c.model = ml_collections.ConfigDict()
  c.model.name = 'iresnet18'
  c.model.kwargs = dict(stage_units=(1, 1, 1, 1),
                        stage_features=(16, 32, 64, 128), stem_features=16,
                        embedding_dim=128)

  c.loss = ml_collections.ConfigDict()
  c.loss.name = 'arcface'
  c.loss.scale = 32.0
  c.loss.margin = 0.3

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.warmup_steps = 20
  c.optimizer.schedule = 'cosine'
  c.optimizer.end_learning_rate = 0.0
  c.optimizer.clip_norm = 0.0

  # In-training evaluation (facejax.evaluators). config.eval is one
  # verification evaluator, recorded as verification_accuracy in
  # metrics.jsonl; eval.batch_size is also what LMLE's re-clustering and
  # the adaptive task weights embed with.
  c.eval = ml_collections.ConfigDict()
  c.eval.every = 200  # steps; 0 turns it off
  c.eval.pairs = 600  # held-out synthetic pairs (LFW protocol, 10 folds)
  c.eval.bin = ''  # or an insightface .bin (lfw.bin ...) instead
  c.eval.seed = 0
  c.eval.batch_size = 200
  # More evaluators, each named and with its own period, as insightface
  # validates on lfw, cfp_fp and agedb_30 while it trains:
  #   c.evals = dict(
  #       lfw=dict(type='verification', bin='lfw.bin', every=2000),
  #       cfp_fp=dict(type='verification', bin='cfp_fp.bin', every=2000),
  #       agedb_30=dict(type='verification', bin='agedb_30.bin', every=2000))
  # records lfw/accuracy, lfw/val_at_far, lfw/eer, lfw/auc, ... Each entry:
  # type (default 'verification'), every (steps; 0: off), optional prefix
  # (default '<name>/') and batch_size (default eval.batch_size), and the
  # evaluator's arguments (verification: pairs and seed, bin, or
  # pairs_file and data (LFW's pairs.txt and folder); metric 'cosine' or
  # 'euclidean'; metrics, a subset of accuracy, accuracy_std, val_at_far,
  # eer, auc).
  c.evals = ml_collections.ConfigDict()
  # The metric the best checkpoint is kept by (besides the last keep_last),
  # any that an evaluator records, e.g. 'lfw/accuracy' or 'cfp_fp/eer'.
  c.best_metric = 'verification_accuracy'

  c.log_every = 20
  c.checkpoint_every = 200
  c.keep_last = 2
  return c
