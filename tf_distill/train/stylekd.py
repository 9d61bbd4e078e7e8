"""One StyleKD iteration (spec C.4) and the state it updates, under any tf.distribute strategy.

The same loop trains a plain StyleGAN2 (no teacher: GAN + R1 + path length + EMA) and distills
a teacher into a student (adds RGB L1, LPIPS and the LD relation loss on latent offsets). With a
content mask (the reference's face parsing of the teacher's image) the L1 and LPIPS terms see only
the masked pixels of both images; ``kd.mode = "intermediate"`` sums the L1 over every RGB skip.

All randomness of a step (z, mixing indices, offsets, noise maps) is drawn on the host from
one checkpointed ``tf.random.Generator`` for the *global* batch, and each replica takes its
rows. Per-sample-set quantities (relation matrices, D's minibatch stddev) are computed per group
of ``group_size`` samples, the reference's per-GPU batch (spec E.9). So a step gives the same
result on one device or on several replicas, and a resumed run continues exactly.
"""

import tensorflow as tf

from tf_distill.losses.distill import latent_directions, relation_loss, sample_offsets, skip_l1
from tf_distill.losses.gan import path_length_penalty, path_lengths
from tf_distill.train.config_check import uses_content_mask
from tf_distill.train.optim import TorchAdam, ema_update, lazy_regularization


def _softplus_mean(x):
    return tf.reduce_mean(tf.nn.softplus(x))


class StyleKDStep:
    """Models, optimizers, RNG and counters of a run, and its ``train_step``.

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

    # ---- the replica step ----------------------------------------------------------------------------
    def _replica_step(self, real, inputs, do_gan, do_r1, do_pl):
        ctx = tf.distribute.get_replica_context()
        n, rid = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group

        def rows(t, total):
            size = total // n
            return t[rid * size:(rid + 1) * size] if n > 1 else t

        def take(tree, total):
            return tf.nest.map_structure(lambda t: rows(t, total), tree)

        b = self.global_batch
        logs = {}
        if do_gan:
            z1, z2, index, noise = take(inputs["d"], b)
            with tf.GradientTape() as tape:
                fake = self.g([z1, z2], inject_index=index, noise=noise)
                with tf.GradientTape() as r1_tape:
                    r1_tape.watch(real)
                    real_logits = self.d(real, training=True)
                    real_sum = tf.reduce_sum(real_logits)
                fake_logits = self.d(fake, training=True)
                d_loss = _softplus_mean(-real_logits) + _softplus_mean(fake_logits)
                logs.update(d_loss=d_loss, real_score=tf.reduce_mean(real_logits),
                            fake_score=tf.reduce_mean(fake_logits))
                if do_r1:
                    grad = r1_tape.gradient(real_sum, real)
                    r1 = tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]))
                    d_loss += self.cfg.r1 / 2 * self.cfg.d_reg_every * r1
                    logs["r1"] = r1
                scaled = d_loss / n
            self._apply(self.d_opt, tape.gradient(scaled, self.d.trainable_variables), self.d.trainable_variables)

        z1, z2, index, noise = take(inputs["g"], b)
        offsets = take(inputs["offsets"], b) if "offsets" in inputs else None
        local = b // n
        if self.distill:
            t_noise = take(inputs["t_noise"], b)
            student_noise = noise
            if offsets is not None:
                student_noise = [tf.concat([a, c], 0) for a, c in zip(noise, take(inputs["g_offset_noise"], b))]
                t_noise = [tf.concat([a, c], 0) for a, c in zip(t_noise, take(inputs["t_offset_noise"], b))]
            t_out = self.teacher([z1, z2], inject_index=index, offsets=offsets, noise=t_noise, return_features=True,
                                 return_rgb_list=self.intermediate)
            t_out = tf.nest.map_structure(tf.stop_gradient, t_out)
            t_image = t_out["image"][:local]
            mask = None
            if self.content_mask_fn is not None and (self.kd.weight_lpips > 0 or (self.kd.weight_l1 > 0 and not self.intermediate)):
                mask = tf.stop_gradient(tf.cast(self.content_mask_fn(t_image), t_image.dtype))
        with tf.GradientTape() as tape:
            g_loss = tf.constant(0.0)
            if self.distill:
                s_out = self.g([z1, z2], inject_index=index, offsets=offsets, noise=student_noise,
                               return_features=True, return_rgb_list=self.intermediate)
                fake = s_out["image"][:local]
            else:
                fake = self.g([z1, z2], inject_index=index, noise=noise)
            if do_gan:
                gan = _softplus_mean(-self.d(fake, training=True))
                g_loss += gan
                logs["g_gan"] = gan
            if self.distill:
                g_loss += self._kd_losses(fake, t_image, mask, s_out, t_out, local, offsets is not None, logs)
            logs["g_loss"] = g_loss
            scaled = g_loss / n
        self._apply(self.g_opt, tape.gradient(scaled, self.g.trainable_variables), self.g.trainable_variables)

        if do_pl:
            pb_total = max(1, b // self.cfg.path_batch_shrink)
            z1, z2, index, noise, image_noise = take(inputs["pl"], pb_total)
            with tf.GradientTape() as tape:
                latent = self.g._wplus([self.g.mapping(z1), self.g.mapping(z2)], index)  # pylint: disable=protected-access
                pl = path_lengths(self.g, latent, image_noise, noise=noise)
                batch_mean = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, tf.reduce_mean(pl))
                penalty, new_mean = path_length_penalty(pl, self.pl_mean, self.cfg.path_decay, batch_mean)
                pl_loss = self.cfg.path_reg * self.cfg.g_reg_every * penalty
                scaled = pl_loss / n
            self._apply(self.g_opt, tape.gradient(scaled, self.g.trainable_variables), self.g.trainable_variables)
            self.pl_mean.assign(new_mean)
            logs.update(path_loss=pl_loss, path_length=batch_mean)
        return {k: ctx.all_reduce(tf.distribute.ReduceOp.MEAN, v) for k, v in logs.items()}

    @staticmethod
    def _apply(optimizer, grads, variables):
        """Steps only the parameters that got a gradient, as torch.optim skips ``grad is None``."""
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])

    def _kd_losses(self, fake, t_image, mask, s_out, t_out, local, with_offsets, logs):
        kd = self.kd
        total = tf.constant(0.0)
        if mask is not None:
            fake, t_image = fake * mask, t_image * mask
        if kd.weight_l1 > 0:
            if self.intermediate:
                l1 = skip_l1(s_out["rgb_list"], t_out["rgb_list"])
            else:
                l1 = tf.reduce_mean(tf.abs(t_image - fake))
            logs["kd_l1"] = l1
            total += kd.weight_l1 * l1
        if kd.weight_lpips > 0:
            x, y = fake, t_image
            if self.g.size > kd.lpips_size:
                x = tf.image.resize(x, [kd.lpips_size] * 2, "bilinear")
                y = tf.image.resize(y, [kd.lpips_size] * 2, "bilinear")
            lp = tf.reduce_mean(self.lpips(x, y))
            logs["kd_lpips"] = lp
            total += kd.weight_lpips * lp
        if kd.weight_relation > 0 and with_offsets:
            rel = tf.add_n([relation_loss(s_out["features"][m - 1], t_out["features"][m - 1], local,
                                          kd.relation_mode, kd.single_view, self.group) for m in kd.mimic_layers])
            logs["kd_relation"] = rel
            total += kd.weight_relation * rel
        return total

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

