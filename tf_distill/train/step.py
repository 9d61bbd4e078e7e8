"""One training iteration (spec C.4) and the state it updates, under any tf.distribute strategy.

The same loop trains a plain StyleGAN2 (no teacher: GAN + R1 + path length + EMA) and distills
a teacher into a student (adds RGB L1, LPIPS and the LD relation loss on latent offsets). With a
content mask (the reference's face parsing of the teacher's image) the L1 and LPIPS terms see only
the masked pixels of both images; ``kd.mode = "intermediate"`` sums the L1 over every RGB skip.
An iteration is three steps, each one optimizer update from the pure losses of tf_distill.losses:
D (logistic loss, lazy R1), G (logistic loss, weighted KD sum) and lazy path length.

All randomness of a step (z, mixing indices, offsets, noise maps) is drawn on the host from
one checkpointed ``tf.random.Generator`` for the *global* batch, and each replica takes its
rows; gradient sums are added in a fixed order (train/determinism.py). Per-sample-set quantities
(relation matrices, D's minibatch stddev) are computed per group of ``group_size`` samples, the
reference's per-GPU batch (spec E.9). So a step gives the same result on one device or on several
replicas, a resumed run continues exactly, and two runs of the same config on one machine end
bit-identical.
"""

import tensorflow as tf

from tf_distill.layers.forms import inference_form
from tf_distill.losses.distill import kd_loss, sample_offsets
from tf_distill.losses.gan import d_logistic_loss, g_logistic_loss, path_length_penalty, path_lengths, r1_penalty
from tf_distill.models.latent_directions import latent_directions
from tf_distill.train.config_check import uses_content_mask
from tf_distill.train.determinism import deterministic_gradient_sums
from tf_distill.train.optim import TorchAdam, ema_update, lazy_regularization


class TrainStep:
    """Models, optimizers, RNG and counters of a run (plain StyleGAN2 or distillation), and its ``train_step``.

    Args:
      strategy: the tf.distribute strategy the models were created under.
      g, g_ema, d: student (or teacher being trained) generator, its EMA copy, discriminator.
      teacher: frozen teacher generator, or None to train a plain StyleGAN2.
      config: the ``train`` and ``kd`` sections of a training config (see configs/).
      lpips: callable (x, y) -> [N] distances, required when ``kd.weight_lpips > 0``.
      content_mask_fn: callable teacher images [N, H, W, 3] -> mask [N, H, W, 1] (1 keeps a
        pixel), required when ``kd.content_mask``; called per replica inside the compiled step.
        Both final images are multiplied by the mask before the L1 and LPIPS terms (the GAN
        term and the ``intermediate`` skips stay unmasked, as the reference); no gradient flows
        into the mask.
    """

    def __init__(self, strategy, g, g_ema, d, config, teacher=None, lpips=None, seed=0, content_mask_fn=None):
        deterministic_gradient_sums()  # a run reproduces bit for bit (train/determinism.py)
        self.strategy, self.g, self.g_ema, self.d, self.teacher = strategy, g, g_ema, d, teacher
        self.cfg, self.kd = config.train, config.kd
        self.distill = teacher is not None
        self.lpips = lpips
        self.content_mask_fn = content_mask_fn
        if self.distill and self.kd.weight_lpips > 0 and lpips is None:
            raise ValueError("kd.weight_lpips > 0 needs an LPIPS model.")
        if self.distill and uses_content_mask(config) and content_mask_fn is None:
            raise ValueError("kd.content_mask is on but no content_mask_fn was given.")
        self.intermediate = self.kd.mode == "intermediate"
        self.global_batch = int(config.train.batch_size)
        self.group = int(self.kd.group_size)
        if self.global_batch % strategy.num_replicas_in_sync:
            raise ValueError(f"batch_size {self.global_batch} is not divisible by the "
                             f"{strategy.num_replicas_in_sync} replicas.")
        per_replica = self.global_batch // strategy.num_replicas_in_sync
        if per_replica % self.group and self.group < per_replica:
            raise ValueError(f"per-replica batch {per_replica} is not divisible by kd.group_size {self.group}.")
        self.group = min(self.group, per_replica)
        g_lr, g_betas = lazy_regularization(self.cfg.lr, (0.0, 0.99), self.cfg.g_reg_every)
        d_lr, d_betas = lazy_regularization(self.cfg.lr, (0.0, 0.99), self.cfg.d_reg_every)
        with strategy.scope():
            self.g_opt = TorchAdam(g_lr, *g_betas, name="g_optim")
            self.d_opt = TorchAdam(d_lr, *d_betas, name="d_optim")
            self.g_opt.build(g.trainable_variables)
            self.d_opt.build(d.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.pl_mean = tf.Variable(0.0, trainable=False, name="pl_mean",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.rng = tf.random.Generator.from_seed(seed)
        blocks = len(g.synthesis.to_rgbs)
        if self.distill and self.kd.weight_relation > 0 and not all(1 <= m <= blocks for m in self.kd.mimic_layers):
            raise ValueError(f"kd.mimic_layers {list(self.kd.mimic_layers)} must be in [1, {blocks}] for a "
                             f"{g.size} px generator (block m has resolution 2^(m+2)).")
        self.directions = None
        if self.distill and self.kd.weight_relation > 0 and self.kd.offset_mode == "main":
            self.directions = tf.constant(latent_directions(teacher, max(self.kd.mimic_layers),
                                                            self.kd.direction_mode))
        self._compiled = {}

    # ---- host-side randomness for the global batch -------------------------------------------------
    def _noise(self, batch):
        return [self.rng.normal([batch, r, r, 1]) for r in self.g.synthesis.noise_shapes()]

    def _mixing(self, batch):
        """z pairs and per-sample inject indices: per group, mixing with prob ``mixing`` at a random row."""
        n_latent, groups = self.g.n_latent, max(1, batch // self.group)
        z = self.rng.normal([2, batch, self.g.style_dim])
        mix = self.rng.uniform([groups]) < self.cfg.mixing
        index = self.rng.uniform([groups], minval=1, maxval=n_latent, dtype=tf.int32)
        index = tf.repeat(tf.where(mix, index, n_latent), batch // groups)
        return z[0], z[1], index

    def _sample(self, do_pl):
        b = self.global_batch
        inputs = {"d": self._mixing(b) + (self._noise(b),), "g": self._mixing(b) + (self._noise(b),)}
        if self.distill:
            inputs["g_offset_noise"] = self._noise(b)
            inputs["t_noise"] = inputs["g"][3] if self.kd.shared_noise else self._noise(b)
            inputs["t_offset_noise"] = inputs["g_offset_noise"] if self.kd.shared_noise else self._noise(b)
            if self.kd.weight_relation > 0:
                seed = self.rng.make_seeds(1)[:, 0]
                inputs["offsets"] = sample_offsets(b, self.g.style_dim, self.directions, self.kd.offset_weight, seed)
        if do_pl:
            pb = max(1, b // self.cfg.path_batch_shrink)
            size = self.g.size
            inputs["pl"] = self._mixing(pb) + (self._noise(pb), self.rng.normal([pb, size, size, 3]) / size)
        return inputs

    # ---- the replica step: D, G, path length ---------------------------------------------------------
    def _replica_step(self, real, inputs, do_gan, do_r1, do_pl):
        ctx = tf.distribute.get_replica_context()
        n, rid = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group

        def take(tree, total):
            """This replica's rows of a global-batch input."""
            size = total // n
            return tf.nest.map_structure(lambda t: t[rid * size:(rid + 1) * size] if n > 1 else t, tree)

        b = self.global_batch
        logs = {}
        if do_gan:
            logs.update(self._d_step(real, take(inputs["d"], b), do_r1, n))
        logs.update(self._g_step({k: take(v, b) for k, v in inputs.items() if k not in ("d", "pl")}, do_gan, n))
        if do_pl:
            logs.update(self._path_length_step(take(inputs["pl"], max(1, b // self.cfg.path_batch_shrink)), ctx))
        return {k: ctx.all_reduce(tf.distribute.ReduceOp.MEAN, v) for k, v in logs.items()}

    def _d_step(self, real, latents, do_r1, n):
        """D's logistic loss on real and generated images, plus the lazy R1 penalty every ``d_reg_every``."""
        z1, z2, index, noise = latents
        fake = self.g([z1, z2], inject_index=index, noise=noise)
        with tf.GradientTape() as tape:
            if do_r1:
                r1, real_logits = r1_penalty(self.d, real, return_logits=True)
            else:
                real_logits = self.d(real, training=True)
            fake_logits = self.d(fake, training=True)
            d_loss = d_logistic_loss(real_logits, fake_logits)
            logs = dict(d_loss=d_loss, real_score=tf.reduce_mean(real_logits), fake_score=tf.reduce_mean(fake_logits))
            if do_r1:
                d_loss += self.cfg.r1 / 2 * self.cfg.d_reg_every * r1
                logs["r1"] = r1
            scaled = d_loss / n
        self._apply(self.d_opt, tape.gradient(scaled, self.d.trainable_variables), self.d.trainable_variables)
        return logs

    def _g_step(self, inputs, do_gan, n):
        """G's logistic loss (unless warming up or ``train.gan`` is off) plus the weighted KD sum."""
        z1, z2, index, noise = inputs["g"]
        offsets = inputs.get("offsets")
        local = self.global_batch // n
        if self.distill:
            t_out, t_image, mask, noise = self._teacher_outputs(inputs, local)
        logs = {}
        with tf.GradientTape() as tape:
            g_loss = tf.constant(0.0)
            if self.distill:
                s_out = self.g([z1, z2], inject_index=index, offsets=offsets, noise=noise,
                               return_features=True, return_rgb_list=self.intermediate)
                fake = s_out["image"][:local]
            else:
                fake = self.g([z1, z2], inject_index=index, noise=noise)
            if do_gan:
                logs["g_gan"] = g_logistic_loss(self.d(fake, training=True))
                g_loss += logs["g_gan"]
            if self.distill:
                kd_total, terms = kd_loss(fake, t_image, s_out, t_out, mask=mask, lpips=self.lpips, **self._kd_args())
                g_loss += kd_total
                logs.update(terms)
            logs["g_loss"] = g_loss
            scaled = g_loss / n
        self._apply(self.g_opt, tape.gradient(scaled, self.g.trainable_variables), self.g.trainable_variables)
        return logs

    def _path_length_step(self, inputs, ctx):
        """The lazy path-length penalty, its running mean averaged over replicas and kept in the graph."""
        z1, z2, index, noise, image_noise = inputs
        with tf.GradientTape() as tape:
            latent = self.g._wplus([self.g.mapping(z1), self.g.mapping(z2)], index)  # pylint: disable=protected-access
            pl = path_lengths(self.g, latent, image_noise, noise=noise)
            batch_mean = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, tf.reduce_mean(pl))
            penalty, new_mean = path_length_penalty(pl, self.pl_mean, self.cfg.path_decay, batch_mean)
            pl_loss = self.cfg.path_reg * self.cfg.g_reg_every * penalty
            scaled = pl_loss / ctx.num_replicas_in_sync
        self._apply(self.g_opt, tape.gradient(scaled, self.g.trainable_variables), self.g.trainable_variables)
        self.pl_mean.assign(new_mean)
        return dict(path_loss=pl_loss, path_length=batch_mean)

    def _teacher_outputs(self, inputs, local):
        """(teacher outputs, its normal-sample images, content mask or None, the student's noise): both
        generators see the normal samples, then the offset ones when the LD term is on; the mask comes
        from the teacher's images."""
        noise, t_noise = inputs["g"][3], inputs["t_noise"]
        offsets = inputs.get("offsets")
        if offsets is not None:
            noise = [tf.concat([a, c], 0) for a, c in zip(noise, inputs["g_offset_noise"])]
            t_noise = [tf.concat([a, c], 0) for a, c in zip(t_noise, inputs["t_offset_noise"])]
        z1, z2, index, _ = inputs["g"]
        t_out = self.teacher([z1, z2], inject_index=index, offsets=offsets, noise=t_noise, return_features=True,
                             return_rgb_list=self.intermediate)
        t_out = tf.nest.map_structure(tf.stop_gradient, t_out)
        t_image, mask = t_out["image"][:local], None
        if self.content_mask_fn is not None and (self.kd.weight_lpips > 0 or
                                                 (self.kd.weight_l1 > 0 and not self.intermediate)):
            mask = tf.stop_gradient(tf.cast(self.content_mask_fn(t_image), t_image.dtype))
        return t_out, t_image, mask, noise

    def _kd_args(self):
        kd = self.kd
        return dict(weight_l1=kd.weight_l1, weight_lpips=kd.weight_lpips, weight_relation=kd.weight_relation,
                    lpips_size=kd.lpips_size, mode=kd.mode, mimic_layers=tuple(kd.mimic_layers),
                    relation_mode=kd.relation_mode, single_view=kd.single_view, group_size=self.group)

    @staticmethod
    def _apply(optimizer, grads, variables):
        """Steps only the parameters that got a gradient, as torch.optim skips ``grad is None``."""
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])

    # ---- the host step ---------------------------------------------------------------------------------
    def flags_for(self, step):
        """(do_gan, do_r1, do_pl) of iteration ``step`` (spec C.4: R1 every 16, path length every 4)."""
        warm = step < self.kd.warmup_steps if self.distill else False
        do_gan = self.cfg.gan and not warm
        do_r1 = do_gan and self.cfg.r1 > 0 and step % self.cfg.d_reg_every == 0
        do_pl = (self.cfg.path_reg > 0 and step % self.cfg.g_reg_every == 0 and not warm)
        return do_gan, do_r1, do_pl

    def _compiled_step(self, flags):
        if flags not in self._compiled:
            do_gan, do_r1, do_pl = flags

            @tf.function
            def step_fn(real):
                inputs = self._sample(do_pl)
                with inference_form(False):  # D's fakes too: one form (the reference's) for the whole step
                    logs = self.strategy.run(self._replica_step, args=(real, inputs, do_gan, do_r1, do_pl))
                logs = {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in logs.items()}
                ema_update(self.g_ema, self.g, self.cfg.ema_decay)
                self.step.assign_add(1)
                return logs

            self._compiled[flags] = step_fn
        return self._compiled[flags]

    def train_step(self, real):
        """Runs iteration ``self.step`` on a (distributed) batch of real images; returns the mean losses."""
        return self._compiled_step(self.flags_for(int(self.step.numpy())))(real)

